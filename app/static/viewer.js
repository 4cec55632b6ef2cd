// The viewer page: send one image to POST /query and show what comes back.
// Plain DOM code, no dependencies; every value from the service is written with
// textContent (never innerHTML), so labels and metadata cannot inject markup.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  const el = {
    collectionControl: $("collection-control"),
    collection: $("collection"),
    topK: $("top-k"),
    dropzone: $("dropzone"),
    fileInput: $("file-input"),
    busy: $("busy"),
    busyText: $("busy-text"),
    error: $("error"),
    errorDetail: $("error-detail"),
    errorRequest: $("error-request"),
    queryFigure: $("query-figure"),
    queryPreview: $("query-preview"),
    queryCaption: $("query-caption"),
    results: $("results"),
    placeholder: $("placeholder"),
    oodBanner: $("ood-banner"),
    oodText: $("ood-text"),
    taskNote: $("task-note"),
    predictions: $("predictions"),
    knnVote: $("knn-vote"),
    cases: $("cases"),
    casesCount: $("cases-count"),
    casesEmpty: $("cases-empty"),
    provenance: $("provenance"),
    dialog: $("case-dialog"),
    dialogTitle: $("dialog-title"),
    dialogClose: $("dialog-close"),
    dialogImage: $("dialog-image"),
    dialogLabels: $("dialog-labels"),
    dialogScore: $("dialog-score"),
    dialogMatch: $("dialog-match"),
    dialogMatchNote: $("dialog-match-note"),
    dialogViewer: $("dialog-viewer"),
    dialogMetadata: $("dialog-metadata"),
    queryStack: $("query-stack"),
    caseStack: $("case-stack"),
    explainQueryImage: $("explain-query-image"),
    queryOverlay: $("query-overlay"),
    caseOverlay: $("case-overlay"),
    queryOverlayCaption: $("query-overlay-caption"),
    overlayToggle: $("overlay-toggle"),
    overlayOpacity: $("overlay-opacity"),
    overlayKind: $("overlay-kind"),
    explainStatus: $("explain-status"),
  };

  let busy = false;
  let lastFile = null;
  let lastAnswer = null;
  let explanation = null; // the /explain answer of the open case
  let explainTicket = 0; // answers for a case closed meanwhile are dropped

  // ------------------------------------------------------------------ small builders

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function testid(node, id) {
    node.dataset.testid = id;
    return node;
  }

  function labelText(label) {
    return label.name && label.name !== label.code ? `${label.name} (${label.code})` : label.code;
  }

  function caseLabels(hit) {
    // a PACS case no label table names has no diagnosis: it is not a "no label" finding
    if (hit.labelled === false) return "unlabelled";
    return hit.labels.map(labelText).join(", ") || "no label";
  }

  // The match probability as people read it: "82 % same diagnosis" (null: not available).
  function matchWords() {
    return lastAnswer && lastAnswer.task === "multi_label" ? "matching findings" : "same diagnosis";
  }

  function matchText(hit) {
    if (hit.match_probability === null || hit.match_probability === undefined) {
      return `${matchWords()}: not available`;
    }
    return `${Math.round(hit.match_probability * 100)} % ${matchWords()}`;
  }

  function scoreKind() {
    return lastAnswer && lastAnswer.index.centred ? "cosine of centred embeddings" : "cosine";
  }

  function matchNote(hit) {
    const calibration = lastAnswer.index.match_calibration;
    if (!calibration) {
      return (
        "Not available: this collection has no calibration (it is unlabelled, or has fewer " +
        "than 50 labelled cases), so the similarity alone cannot say how often such cases match."
      );
    }
    if (hit.match_probability === null || hit.match_probability === undefined) {
      return "Not available: this case is unlabelled, so it has no diagnosis to share.";
    }
    return (
      `Among pairs of archived cases this alike, ${Math.round(hit.match_probability * 100)} % ` +
      `had ${calibration.rule}. Fitted on this collection's own ${calibration.labelled_cases} ` +
      "labelled cases, each compared with its most similar cases of other patients " +
      "(a patient's or lesion's own images left out)" +
      (calibration.queries_from === "held-out cases"
        ? ""
        : ", with training images among the queries, so it may promise too much") +
      (calibration.reads === "raw cosine"
        ? ", and read at the cosine of the model's own embeddings, which tells matching " +
          "pairs apart better than the ranking score: a lower-ranked case can be the likelier match"
        : "") +
      ". It describes the archive, not this patient: it is not a diagnosis, and images " +
      "unlike the archive's may match less often."
    );
  }

  function percent(fraction) {
    return `${(fraction * 100).toFixed(1)}%`;
  }

  function ms(value) {
    return value >= 100 ? `${Math.round(value)} ms` : `${value.toFixed(1)} ms`;
  }

  // ------------------------------------------------------------------ page states

  function setBusy(on, fileName) {
    busy = on;
    el.busy.hidden = !on;
    el.dropzone.classList.toggle("is-busy", on);
    el.results.setAttribute("aria-busy", on ? "true" : "false");
    el.fileInput.disabled = on;
    el.collection.disabled = on;
    el.topK.disabled = on;
    if (on) el.busyText.textContent = `Analysing ${fileName || "the image"}…`;
  }

  function clearResults() {
    el.results.hidden = true;
    el.placeholder.hidden = false;
    el.oodBanner.hidden = true;
    el.predictions.replaceChildren();
    el.knnVote.replaceChildren();
    el.cases.replaceChildren();
    el.provenance.textContent = "";
    el.queryFigure.hidden = true;
    el.queryPreview.removeAttribute("src");
    el.queryCaption.textContent = "";
  }

  function clearError() {
    el.error.hidden = true;
    el.errorDetail.textContent = "";
    el.errorRequest.textContent = "";
  }

  function showError(detail, requestId) {
    clearResults();
    el.errorDetail.textContent = detail;
    el.errorRequest.textContent = requestId ? `request id ${requestId}` : "";
    el.error.hidden = false;
  }

  // ------------------------------------------------------------------ collections

  async function loadCollections() {
    let collections;
    try {
      const response = await fetch("/collections", { headers: { Accept: "application/json" } });
      if (!response.ok) {
        const body = await readJson(response);
        showError(
          (body && body.detail) || `The list of collections is unavailable (HTTP ${response.status}).`,
          body && body.request_id,
        );
        return;
      }
      collections = await response.json();
    } catch (err) {
      showError("The service cannot be reached. Check the connection and reload the page.");
      return;
    }
    el.collection.replaceChildren();
    for (const c of collections) {
      const option = make("option", null, `${c.name} · ${c.size} cases`);
      option.value = c.name;
      el.collection.append(option);
    }
    el.collectionControl.hidden = collections.length <= 1;
    if (collections.length === 0) {
      showError("No collection is loaded yet; an administrator needs to build an index first.");
    }
  }

  // ------------------------------------------------------------------ the query

  async function readJson(response) {
    try {
      return await response.json();
    } catch (err) {
      return null;
    }
  }

  function queryUrl() {
    const params = new URLSearchParams({ top_k: el.topK.value, preview: "true" });
    if (el.collection.value) params.set("collection", el.collection.value);
    return `/query?${params}`;
  }

  async function runQuery(file) {
    if (busy || !file) return;
    lastFile = file;
    clearError();
    clearResults();
    setBusy(true, file.name);
    const form = new FormData();
    form.append("file", file, file.name || "upload");
    try {
      let response;
      try {
        response = await fetch(queryUrl(), { method: "POST", body: form });
      } catch (err) {
        showError("The service cannot be reached. Check the connection and try again.");
        return;
      }
      const body = await readJson(response);
      if (!response.ok || body === null) {
        const requestId = (body && body.request_id) || response.headers.get("X-Request-ID");
        const detail =
          body && typeof body.detail === "string"
            ? body.detail
            : `The service answered with HTTP ${response.status}.`;
        showError(detail, requestId);
        return;
      }
      renderAnswer(body);
    } finally {
      setBusy(false);
    }
  }

  // ------------------------------------------------------------------ rendering

  function renderAnswer(answer) {
    lastAnswer = answer;
    renderQueryImage(answer.query);
    renderOod(answer.out_of_distribution, answer.index);
    renderPredictions(answer.predictions, answer.task);
    const basis = answer.knn_vote_basis;
    renderVote(answer.knn_vote, basis ? basis.labelled_cases : answer.cases.length);
    renderCases(answer.cases);
    renderProvenance(answer);
    el.placeholder.hidden = true;
    el.results.hidden = false;
  }

  function renderQueryImage(query) {
    if (query.preview) {
      el.queryPreview.src = query.preview;
    } else {
      el.queryPreview.removeAttribute("src");
    }
    const name = lastFile && lastFile.name ? `${lastFile.name} · ` : "";
    el.queryCaption.textContent = `${name}${query.format.toUpperCase()}, ${query.width} × ${query.height} px`;
    el.queryFigure.hidden = false;
  }

  function renderOod(ood, index) {
    if (!ood.flagged) {
      el.oodBanner.hidden = true;
      el.oodText.textContent = "";
      return;
    }
    const threshold = ood.threshold === null ? "" : `, threshold ${ood.threshold.toFixed(1)}`;
    el.oodText.textContent =
      `This image is unlike the images in the “${index.collection}” collection ` +
      `(score ${ood.score.toFixed(1)}${threshold}). ` +
      "The predictions and similar cases may not be meaningful for it.";
    el.oodBanner.hidden = false;
  }

  function bar(name, value, fraction, rowTestid) {
    const row = testid(make("li", "bar-row"), rowTestid);
    row.dataset.value = String(fraction);
    const label = make("span", "bar-label", name);
    label.title = name;
    const track = make("span", "bar-track");
    const fill = make("span", "bar-fill");
    fill.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
    track.append(fill);
    const number = testid(make("span", "bar-value", value), `${rowTestid}-value`);
    row.append(label, track, number);
    return row;
  }

  function renderPredictions(predictions, task) {
    el.taskNote.textContent =
      task === "multi_label"
        ? "Multi-label: independent probabilities, one per finding; they need not add up to 100%."
        : "One label per image: the probabilities add up to 100%.";
    el.predictions.dataset.task = task;
    el.predictions.replaceChildren(
      ...predictions.map((p, i) => {
        const row = bar(labelText(p), percent(p.probability), p.probability, "prediction");
        if (i === 0) row.classList.add("is-top");
        return row;
      }),
    );
  }

  function renderVote(vote, total) {
    el.knnVote.replaceChildren(
      ...vote.map((v) => bar(labelText(v), `${v.count} of ${total}`, v.fraction, "vote")),
    );
  }

  function renderCases(cases) {
    el.casesCount.textContent = cases.length ? `· ${cases.length}, ${rankingWords()}` : "";
    el.casesCount.title = lastAnswer ? `Ranked by ${lastAnswer.index.ranking}` : "";
    el.casesEmpty.hidden = cases.length > 0;
    el.cases.replaceChildren(...cases.map(caseCard));
  }

  // With a label term (index.label_weight > 0) the cases are ranked by similarity and by
  // how likely the model finds each case's diagnosis for the query (docs/service.md).
  function rankingWords() {
    return lastAnswer && lastAnswer.index.label_weight > 0
      ? "ranked by similarity and the model's likely diagnosis"
      : "most similar first";
  }

  function caseCard(hit) {
    const item = make("li");
    const button = testid(make("button", "case"), "case");
    button.type = "button";
    button.dataset.caseId = String(hit.case_id);
    const labels = caseLabels(hit);
    button.setAttribute(
      "aria-label",
      `Rank ${hit.rank}: ${labels}, ${matchText(hit)}, similarity ${hit.score.toFixed(3)}. ` +
        "Open enlarged.",
    );
    const img = testid(make("img", "case-thumb"), "case-thumbnail");
    img.src = hit.thumbnail_url;
    img.alt = "";
    img.decoding = "async";
    const rank = testid(make("span", "case-rank", `#${hit.rank}`), "case-rank");
    const match = testid(make("span", "case-match", matchText(hit)), "case-match");
    match.classList.toggle("unavailable", hit.match_probability == null);
    const score = make("span", "case-score", "cosine ");
    score.append(testid(make("span", null, hit.score.toFixed(3)), "case-score"));
    const caption = make("span", "case-caption");
    caption.append(testid(make("span", "case-labels", labels), "case-labels"), match, score);
    button.append(img, rank, caption);
    button.addEventListener("click", () => openCase(hit));
    item.append(button);
    return item;
  }

  function renderProvenance(answer) {
    const t = answer.timings;
    const sha = answer.model.checkpoint_sha256.slice(0, 12);
    el.provenance.textContent =
      `Model ${answer.model.name} (checkpoint ${sha}) · ` +
      `index “${answer.index.collection}” version ${answer.index.version}, ${answer.index.size} cases · ` +
      `decode ${ms(t.decode_ms)}, embed ${ms(t.embed_ms)}, search ${ms(t.search_ms)}, ` +
      `total ${ms(t.total_ms)} · request ${answer.request_id}`;
  }

  // ------------------------------------------------------------------ the enlarged case

  function openCase(hit) {
    el.dialogTitle.textContent = `Case ${hit.case_id} · rank ${hit.rank}`;
    const [height, width] = lastAnswer.model.image_size;
    for (const stack of [el.queryStack, el.caseStack]) {
      stack.style.aspectRatio = `${width} / ${height}`; // the model's canvas
    }
    if (lastAnswer.query.preview) {
      el.explainQueryImage.src = lastAnswer.query.preview;
    } else {
      el.explainQueryImage.removeAttribute("src");
    }
    el.explainQueryImage.alt = "The query image";
    el.dialogImage.src = hit.image_url;
    el.dialogImage.alt = `Case ${hit.case_id}`;
    el.dialogLabels.textContent = caseLabels(hit);
    if (hit.viewer_url) {
      el.dialogViewer.href = hit.viewer_url;
      el.dialogViewer.hidden = false;
    } else {
      el.dialogViewer.removeAttribute("href");
      el.dialogViewer.hidden = true;
    }
    el.dialogMatch.textContent = matchText(hit);
    el.dialogMatchNote.textContent = matchNote(hit);
    el.dialogScore.textContent = `Similarity ${hit.score.toFixed(3)} (${scoreKind()}, −1 to 1)`;
    const facts = [["split", hit.split], ...Object.entries(hit.metadata || {})];
    el.dialogMetadata.replaceChildren(
      ...facts.flatMap(([key, value]) => [
        make("dt", null, key),
        make("dd", null, typeof value === "object" ? JSON.stringify(value) : value),
      ]),
    );
    el.dialog.showModal();
    el.dialogClose.focus();
    explainCase(hit);
  }

  // ------------------------------------------------------------------ why similar

  function clearExplanation() {
    explainTicket += 1;
    explanation = null;
    for (const overlay of [el.queryOverlay, el.caseOverlay]) {
      overlay.hidden = true;
      overlay.removeAttribute("src");
    }
    el.explainStatus.textContent = "";
  }

  async function explainCase(hit) {
    clearExplanation();
    if (!lastFile) return;
    const ticket = explainTicket;
    el.explainStatus.textContent = "Computing the heat maps…";
    const params = new URLSearchParams({ case_id: String(hit.case_id), collection: hit.collection });
    const form = new FormData();
    form.append("file", lastFile, lastFile.name || "upload");
    let response;
    let body = null;
    try {
      response = await fetch(`/explain?${params}`, { method: "POST", body: form });
      body = await readJson(response);
    } catch (err) {
      if (ticket === explainTicket) {
        el.explainStatus.textContent = "The heat maps are unavailable: the service cannot be reached.";
      }
      return;
    }
    if (ticket !== explainTicket) return;
    if (!response.ok || body === null) {
      const detail =
        body && typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`;
      el.explainStatus.textContent = `The heat maps are unavailable: ${detail}`;
      return;
    }
    explanation = body;
    el.explainStatus.textContent =
      `Warm colours mark the regions that raise the similarity ${body.score.toFixed(3)} ` +
      `(method: ${body.method}; one cell per ${body.patch_size} px of the model's canvas).`;
    showOverlays();
  }

  function showOverlays() {
    if (!explanation) return;
    const byClass = el.overlayKind.value === "class";
    const queryMap = byClass ? explanation.class_map : explanation.query_map;
    el.queryOverlay.src = queryMap.overlay;
    el.caseOverlay.src = explanation.case_map.overlay;
    el.queryOverlayCaption.textContent = byClass
      ? `Query · regions that speak for “${labelText(explanation.class_map)}”`
      : "Query";
    const opacity = String(Number(el.overlayOpacity.value) / 100);
    for (const overlay of [el.queryOverlay, el.caseOverlay]) {
      overlay.style.opacity = opacity;
      overlay.hidden = !el.overlayToggle.checked;
    }
    el.overlayOpacity.disabled = !el.overlayToggle.checked;
  }

  for (const control of [el.overlayToggle, el.overlayOpacity, el.overlayKind]) {
    control.addEventListener("input", showOverlays);
    control.addEventListener("change", showOverlays);
  }

  el.dialogClose.addEventListener("click", () => el.dialog.close());
  el.dialog.addEventListener("click", (event) => {
    if (event.target === el.dialog) el.dialog.close(); // a click on the backdrop
  });
  el.dialog.addEventListener("close", () => {
    el.dialogImage.removeAttribute("src");
    el.explainQueryImage.removeAttribute("src");
    clearExplanation();
  });

  // ------------------------------------------------------------------ file input and drop

  el.fileInput.addEventListener("change", () => {
    const file = el.fileInput.files && el.fileInput.files[0];
    el.fileInput.value = ""; // choosing the same file again runs it again
    runQuery(file);
  });

  const stop = (event) => {
    event.preventDefault();
    event.stopPropagation();
  };
  for (const type of ["dragenter", "dragover"]) {
    el.dropzone.addEventListener(type, (event) => {
      stop(event);
      if (event.dataTransfer) event.dataTransfer.dropEffect = busy ? "none" : "copy";
      el.dropzone.classList.add("is-over");
    });
  }
  el.dropzone.addEventListener("dragleave", (event) => {
    if (!el.dropzone.contains(event.relatedTarget)) el.dropzone.classList.remove("is-over");
  });
  el.dropzone.addEventListener("drop", (event) => {
    stop(event);
    el.dropzone.classList.remove("is-over");
    const files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) runQuery(files[0]);
  });
  // A file dropped beside the zone must not make the browser navigate away to it.
  for (const type of ["dragover", "drop"]) window.addEventListener(type, stop);

  loadCollections();
})();

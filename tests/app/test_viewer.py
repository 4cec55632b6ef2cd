"""The viewer page at ``/``, driven end to end in headless Chromium against a real server.

Debian's ``chromium`` is driven through Playwright (``executable_path``; no browser
download). Without it the tests are skipped, except when ``CI`` is set: then they fail,
so CI can never pass while silently skipping the viewer. Set
``MEDRET_VIEWER_SCREENSHOT=/path/shot.png`` to keep a picture of the result page.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest

from support.dicom import CT_IMAGE, dicom_bytes
from support.server import LiveServer

CHROMIUM = Path(os.environ.get("MEDRET_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 20_000
HAM_LABELS = 7


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so the viewer tests must run, but {reason}", pytrace=False)
    pytest.skip(reason)


try:
    from playwright.sync_api import (
        Browser,
        ConsoleMessage,
        Page,
        Route,
        expect,
        sync_playwright,
    )
except ImportError:  # pragma: no cover - the dev extra installs it
    _unavailable("playwright is not installed (pip install -e '.[dev]')")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class ViewerPage:
    """The page, opened at ``/``, plus everything it logged as an error."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location.get('url')})")

    def testid(self, name: str) -> Any:
        return self.page.get_by_test_id(name)

    def upload(self, name: str, content: bytes, mime: str) -> None:
        self.testid("file-input").set_input_files(
            {"name": name, "mimeType": mime, "buffer": content}
        )

    def wait_for_results(self) -> None:
        """The answer is on the page (the first query of a session may be slow)."""
        expect(self.testid("results")).to_be_visible(timeout=TIMEOUT_MS)
        expect(self.testid("busy")).to_be_hidden()

    def images_loaded(self, selector: str) -> list[int]:
        """naturalWidth of every matching image, once each has finished loading."""
        self.page.wait_for_function(
            "sel => [...document.querySelectorAll(sel)].every(i => i.complete)",
            arg=selector,
        )
        widths: list[int] = self.page.eval_on_selector_all(
            selector, "imgs => imgs.map(i => i.naturalWidth)"
        )
        return widths


@pytest.fixture
def viewer(browser: Browser, live_server: LiveServer) -> Iterator[ViewerPage]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    opened = ViewerPage(page)
    page.goto(live_server.url + "/")
    # the collections list has arrived once the selector holds an option
    expect(page.locator("[data-testid=collection] option")).to_have_count(1)
    try:
        yield opened
    finally:
        context.close()


def ct_like_dicom(size: int = 64) -> bytes:
    """A monochrome CT slice (signed HU values, rescale, window): a bright disc on air."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    hu = np.where(disc, 400, -1000).astype(np.int16)
    return dicom_bytes(
        hu + 1024,
        sop_class=CT_IMAGE,
        Modality="CT",
        RescaleIntercept=-1024,
        RescaleSlope=1,
        WindowCenter=40,
        WindowWidth=400,
    )


# --------------------------------------------------------------------------- tests


def test_upload_shows_predictions_cases_and_the_enlarged_case(
    viewer: ViewerPage, ham_image: bytes
) -> None:
    page = viewer.page
    expect(viewer.testid("collection-control")).to_be_hidden()  # only one collection
    expect(viewer.testid("disclaimer")).to_contain_text("do not replace, clinical judgement")

    viewer.upload("lesion.jpg", ham_image, "image/jpeg")
    viewer.wait_for_results()

    bars = viewer.testid("prediction")
    expect(bars).to_have_count(HAM_LABELS)
    shown = [float(t.rstrip("%")) for t in viewer.testid("prediction-value").all_inner_texts()]
    assert math.isclose(sum(shown), 100, abs_tol=0.5), shown
    assert shown == sorted(shown, reverse=True)
    expect(viewer.testid("task-note")).to_contain_text("add up to 100%")
    expect(viewer.testid("knn-vote").locator("li").first).to_be_visible()

    cases = viewer.testid("case")
    expect(cases).to_have_count(10)  # the default top-K
    widths = viewer.images_loaded("[data-testid=case-thumbnail]")
    assert len(widths) == 10
    assert all(w > 0 for w in widths), widths
    assert float(viewer.testid("case-score").first.inner_text()) >= 0.99  # it is indexed
    expect(viewer.testid("case-rank").first).to_have_text("#1")
    assert viewer.images_loaded("[data-testid=query-preview]")[0] > 0
    expect(viewer.testid("ood-warning")).to_be_hidden()
    expect(viewer.testid("error")).to_be_hidden()
    expect(viewer.testid("provenance")).to_contain_text("“derm” version")

    if shot := os.environ.get("MEDRET_VIEWER_SCREENSHOT"):
        page.screenshot(path=shot, full_page=True)

    dialog = viewer.testid("case-dialog")
    cases.first.click()
    expect(dialog).to_be_visible()
    assert viewer.images_loaded("[data-testid=dialog-image]")[0] > 0
    label = viewer.testid("case-labels").first.inner_text()
    expect(viewer.testid("dialog-labels")).to_have_text(label)
    expect(viewer.testid("dialog-metadata")).to_contain_text("split")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    cases.nth(1).click()
    expect(viewer.testid("dialog-title")).to_contain_text("rank 2")
    viewer.testid("dialog-close").click()
    expect(dialog).to_be_hidden()

    assert viewer.errors == []


def overlay_opacities(viewer: ViewerPage) -> list[str]:
    opacities: list[str] = viewer.page.eval_on_selector_all(
        "[data-testid=explain-overlay]", "imgs => imgs.map(i => getComputedStyle(i).opacity)"
    )
    return opacities


def test_the_case_dialog_shows_both_heat_maps_and_their_controls(
    viewer: ViewerPage, ham_image: bytes
) -> None:
    page = viewer.page
    viewer.upload("lesion.jpg", ham_image, "image/jpeg")
    viewer.wait_for_results()
    case = viewer.testid("case").nth(1)
    case_id = case.get_attribute("data-case-id")
    with page.expect_response("**/explain?*") as answered:
        case.click()
    response = answered.value
    assert response.ok, response.text()
    assert f"case_id={case_id}" in response.url
    explained = response.json()

    overlays = viewer.testid("explain-overlay")
    expect(overlays).to_have_count(2)
    expect(overlays.first).to_be_visible()
    expect(overlays.last).to_be_visible()
    assert viewer.images_loaded("[data-testid=explain-overlay]") == [64, 64]  # the canvas
    assert viewer.images_loaded("[data-testid=explain-query-image]")[0] > 0
    assert viewer.images_loaded("[data-testid=dialog-image]")[0] > 0
    sources = overlays.evaluate_all("imgs => imgs.map(i => i.src)")
    assert sources == [explained["query_map"]["overlay"], explained["case_map"]["overlay"]]
    expect(viewer.testid("explain-status")).to_contain_text(f"{explained['score']:.3f}")
    assert overlay_opacities(viewer) == ["0.7", "0.7"]

    viewer.testid("overlay-opacity").fill("30")  # the slider fades both maps
    assert overlay_opacities(viewer) == ["0.3", "0.3"]
    viewer.testid("overlay-toggle").uncheck()  # the toggle hides them
    expect(overlays.first).to_be_hidden()
    expect(overlays.last).to_be_hidden()
    expect(viewer.testid("overlay-opacity")).to_be_disabled()
    viewer.testid("overlay-toggle").check()
    expect(overlays.first).to_be_visible()
    assert overlay_opacities(viewer) == ["0.3", "0.3"]

    viewer.testid("overlay-kind").select_option("class")  # the query's top class instead
    expect(overlays.first).to_have_attribute("src", explained["class_map"]["overlay"])
    expect(overlays.last).to_have_attribute("src", explained["case_map"]["overlay"])
    top = viewer.testid("prediction").first.locator(".bar-label").inner_text()
    expect(viewer.testid("query-overlay-caption")).to_contain_text(top)

    page.keyboard.press("Escape")
    expect(viewer.testid("case-dialog")).to_be_hidden()
    expect(overlays.first).to_be_hidden()
    assert viewer.errors == []


def test_a_dropped_file_is_queried_with_the_chosen_top_k(
    viewer: ViewerPage, ham_image: bytes
) -> None:
    page = viewer.page
    viewer.testid("top-k").select_option("5")
    transfer = page.evaluate_handle(
        """([b64, name, type]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type}));
            return transfer;
        }""",
        [base64.b64encode(ham_image).decode(), "dropped.jpg", "image/jpeg"],
    )
    zone = viewer.testid("dropzone")
    zone.dispatch_event("dragenter", {"dataTransfer": transfer})
    expect(zone).to_have_class(re.compile(r"\bis-over\b"))
    zone.dispatch_event("drop", {"dataTransfer": transfer})

    viewer.wait_for_results()
    expect(zone).not_to_have_class(re.compile(r"\bis-over\b"))
    expect(viewer.testid("case")).to_have_count(5)
    expect(viewer.testid("prediction")).to_have_count(HAM_LABELS)
    expect(viewer.testid("query-caption")).to_contain_text("dropped.jpg")
    assert viewer.errors == []


def test_a_text_file_shows_the_error_and_no_stale_results(
    viewer: ViewerPage, ham_image: bytes
) -> None:
    viewer.upload("lesion.jpg", ham_image, "image/jpeg")
    viewer.wait_for_results()
    expect(viewer.testid("case").first).to_be_visible()

    viewer.upload("notes.png", b"this is a clinical note, not a picture\n" * 20, "image/png")
    error = viewer.testid("error")
    expect(error).to_be_visible(timeout=TIMEOUT_MS)
    expect(viewer.testid("error-detail")).to_contain_text("not an image")
    expect(viewer.testid("error-request")).to_have_text(re.compile(r"request id \S+"))
    expect(viewer.testid("results")).to_be_hidden()
    expect(viewer.testid("case")).to_have_count(0)
    expect(viewer.testid("query")).to_be_hidden()
    expect(viewer.testid("busy")).to_be_hidden()
    expect(viewer.testid("file-input")).to_be_enabled()

    viewer.upload("lesion.jpg", ham_image, "image/jpeg")  # and the page recovers
    viewer.wait_for_results()
    expect(error).to_be_hidden()


def test_a_dicom_upload_shows_the_rendered_slice(viewer: ViewerPage) -> None:
    viewer.upload("slice.dcm", ct_like_dicom(64), "application/dicom")
    viewer.wait_for_results()
    expect(viewer.testid("query-caption")).to_contain_text("DICOM, 64 × 64 px")
    assert viewer.images_loaded("[data-testid=query-preview]") == [64]
    # The browser shows the service's rendering: a bright disc on a dark background.
    centre, corner = viewer.page.eval_on_selector(
        "[data-testid=query-preview]",
        """img => {
            const canvas = document.createElement("canvas");
            canvas.width = img.naturalWidth;
            canvas.height = img.naturalHeight;
            const ctx = canvas.getContext("2d");
            ctx.drawImage(img, 0, 0);
            const grey = (x, y) => ctx.getImageData(x, y, 1, 1).data[0];
            return [grey(32, 32), grey(1, 1)];
        }""",
    )
    assert centre > 200, centre
    assert corner < 50, corner
    expect(viewer.testid("prediction")).to_have_count(HAM_LABELS)


def edited_answer(route: Route, **changes: Any) -> None:
    """Forward the request to the real service and answer with its JSON, edited."""
    answer = route.fetch().json()
    answer.update(changes)
    route.fulfill(
        status=200,
        content_type="application/json",
        body=json.dumps(answer),
    )


def test_the_ood_banner_and_the_busy_state(viewer: ViewerPage, ham_image: bytes) -> None:
    page = viewer.page
    held: list[Route] = []
    page.route("**/query?*", lambda route: held.append(route))  # the page is busy meanwhile

    viewer.upload("lesion.jpg", ham_image, "image/jpeg")
    expect(viewer.testid("busy")).to_be_visible()
    expect(viewer.testid("busy")).to_contain_text("lesion.jpg")
    expect(viewer.testid("file-input")).to_be_disabled()
    expect(viewer.testid("results")).to_be_hidden()
    assert len(held) == 1

    ood = {"flagged": True, "score": 91.2, "threshold": 40.5}
    edited_answer(held[0], out_of_distribution=ood)
    viewer.wait_for_results()
    banner = viewer.testid("ood-warning")
    expect(banner).to_be_visible()
    expect(banner).to_have_attribute("role", "alert")
    expect(banner).to_contain_text("unlike the images in the “derm” collection")
    expect(banner).to_contain_text("(score 91.2, threshold 40.5)")
    expect(viewer.testid("file-input")).to_be_enabled()


def test_a_multi_label_answer_says_independent_probabilities(
    viewer: ViewerPage, ham_image: bytes
) -> None:
    viewer.page.route("**/query?*", lambda route: edited_answer(route, task="multi_label"))
    viewer.upload("lesion.jpg", ham_image, "image/jpeg")
    viewer.wait_for_results()
    expect(viewer.testid("task-note")).to_contain_text("independent probabilities")
    expect(viewer.testid("ood-warning")).to_be_hidden()


def pacs_cases(route: Route) -> None:
    """The real answer with its first case made an unlabelled PACS case with a viewer link."""
    answer = route.fetch().json()
    first = answer["cases"][0]
    first.update(
        labels=[],
        labelled=False,
        dicom={"study_uid": "1.2.3", "series_uid": "1.2.3.4", "instance_uid": "1.2.3.4.5"},
        viewer_url="https://viewer.example/viewer?StudyInstanceUIDs=1.2.3",
    )
    route.fulfill(status=200, content_type="application/json", body=json.dumps(answer))


def test_a_pacs_case_links_to_the_viewer_and_reads_unlabelled(
    viewer: ViewerPage, ham_image: bytes
) -> None:
    viewer.page.route("**/query?*", pacs_cases)
    viewer.upload("lesion.jpg", ham_image, "image/jpeg")
    viewer.wait_for_results()
    expect(viewer.testid("case-labels").first).to_have_text("unlabelled")

    link = viewer.testid("dialog-viewer")
    viewer.testid("case").first.click()
    expect(viewer.testid("dialog-labels")).to_have_text("unlabelled")
    expect(link).to_be_visible()
    expect(link).to_have_text("Open in viewer")
    expect(link).to_have_attribute("href", "https://viewer.example/viewer?StudyInstanceUIDs=1.2.3")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    viewer.testid("dialog-close").click()

    viewer.testid("case").nth(1).click()  # a case of a folder archive: no link
    expect(viewer.testid("dialog-labels")).not_to_have_text("unlabelled")
    expect(link).to_be_hidden()
    viewer.testid("dialog-close").click()
    assert viewer.errors == []


def test_each_case_shows_the_match_probability_the_api_gives(
    viewer: ViewerPage, ham_image: bytes
) -> None:
    page = viewer.page
    with page.expect_response("**/query?*") as answered:
        viewer.upload("lesion.jpg", ham_image, "image/jpeg")
    answer = answered.value.json()
    viewer.wait_for_results()
    probabilities = [case["match_probability"] for case in answer["cases"]]
    assert all(p is not None for p in probabilities)  # the collection is labelled
    shown = viewer.testid("case-match").all_inner_texts()
    assert shown == [f"{round(p * 100)} % same diagnosis" for p in probabilities]
    cosines = [float(t) for t in viewer.testid("case-score").all_inner_texts()]
    assert cosines == pytest.approx([c["score"] for c in answer["cases"]], abs=5e-4)

    second = answer["cases"][1]
    viewer.testid("case").nth(1).click()
    expect(viewer.testid("dialog-match")).to_have_text(
        f"{round(second['match_probability'] * 100)} % same diagnosis"
    )
    note = viewer.testid("dialog-match-note")
    expect(note).to_contain_text(f"{round(second['match_probability'] * 100)} % had the same label")
    labelled = answer["index"]["match_calibration"]["labelled_cases"]
    expect(note).to_contain_text(f"own {labelled} labelled cases")
    expect(note).to_contain_text("it is not a diagnosis")
    expect(viewer.testid("dialog-score")).to_contain_text(
        f"Similarity {second['score']:.3f} (cosine of centred embeddings"
    )
    viewer.testid("dialog-close").click()
    assert viewer.errors == []


def uncalibrated(route: Route) -> None:
    """The real answer as a collection without a calibration gives it."""
    answer = route.fetch().json()
    answer["index"]["match_calibration"] = None
    for case in answer["cases"]:
        case["match_probability"] = None
    route.fulfill(status=200, content_type="application/json", body=json.dumps(answer))


def test_a_missing_match_probability_shows_as_not_available(
    viewer: ViewerPage, ham_image: bytes
) -> None:
    viewer.page.route("**/query?*", uncalibrated)
    viewer.upload("lesion.jpg", ham_image, "image/jpeg")
    viewer.wait_for_results()
    shown = viewer.testid("case-match").all_inner_texts()
    assert shown == ["same diagnosis: not available"] * 10
    viewer.testid("case").first.click()
    expect(viewer.testid("dialog-match")).to_have_text("same diagnosis: not available")
    expect(viewer.testid("dialog-match-note")).to_contain_text("no calibration")
    expect(viewer.testid("dialog-score")).to_contain_text("Similarity")
    viewer.testid("dialog-close").click()
    assert viewer.errors == []


def label_ranked(route: Route) -> None:
    """The real answer as a version with a label term (λ > 0) orders it: the scores are
    still the cosines, so they need not fall with the rank (here the first two swap)."""
    answer = route.fetch().json()
    answer["index"].update(
        label_weight=0.02, ranking="cosine + 0.02 × log P(the query has the case's diagnosis)"
    )
    cases = answer["cases"]
    cases[0], cases[1] = cases[1], cases[0]
    for rank, case in enumerate(cases, start=1):
        case["rank"] = rank
    route.fulfill(status=200, content_type="application/json", body=json.dumps(answer))


def test_a_label_ranked_answer_says_so_and_keeps_the_api_order(
    viewer: ViewerPage, ham_image: bytes
) -> None:
    page = viewer.page
    with page.expect_response("**/query?*") as answered:
        viewer.upload("lesion.jpg", ham_image, "image/jpeg")
    plain = answered.value.json()
    viewer.wait_for_results()
    assert plain["index"]["label_weight"] == 0  # the test collection ranks by the cosine
    count = viewer.testid("cases-count")
    expect(count).to_have_text(f"· {len(plain['cases'])}, most similar first")

    page.route("**/query?*", label_ranked)
    with page.expect_response("**/query?*") as answered:
        viewer.upload("lesion.jpg", ham_image, "image/jpeg")
    ranked = answered.value.json()
    viewer.wait_for_results()
    expect(count).to_contain_text("ranked by similarity and the model's likely diagnosis")
    expect(count).to_have_attribute(
        "title", "Ranked by cosine + 0.02 × log P(the query has the case's diagnosis)"
    )
    cosines = [float(t) for t in viewer.testid("case-score").all_inner_texts()]
    assert cosines == pytest.approx([c["score"] for c in ranked["cases"]], abs=5e-4)
    assert cosines[0] < cosines[1]  # shown in the API's order, not re-sorted by score
    assert viewer.errors == []

"""``medret explain``: a PNG sheet of why a query's nearest cases are near, for reports.

The query file is decoded (:func:`imaging.decode.decode_file`) and letterboxed with the
checkpoint's preprocessing, embedded through :func:`model.inference.infer` and searched in
the collection's active index (:class:`indexer.search.CollectionIndex`), as the service
does. Then :mod:`model.explain` makes the maps, and the sheet shows them:

* first row: the query, the map of what drives its predicted class, and the summary;
* one row per retrieved case: the case, the case's map and the query's map for that
  case's similarity, with the rank, the score and the case's labels.

The checkpoint must be the one the collection was indexed with (else the search refuses).
Expected failures (no such checkpoint, collection or image) raise :class:`CommandError`.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from commandline.errors import CommandError
from commandline.types import positive_int

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image, ImageDraw, ImageFont

    from imaging.decode import DecodeLimits
    from indexer.store import CaseInfo, MetadataStore
    from labels import LabelSpace

    Font = ImageFont.ImageFont | ImageFont.FreeTypeFont

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 4
MAX_TOP_K = 10
PANEL = 160  # side of one picture on the sheet, pixels
GAP = 8
CAPTION = 30  # two lines of the default font under each picture
COLUMNS = 3
OPACITY = 0.6
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
UNAVAILABLE = (200, 200, 200)


def add_explain_arguments(p: argparse.ArgumentParser) -> None:
    from indexer.arguments import add_location_arguments

    p.add_argument("--checkpoint", type=Path, required=True, help="the collection's checkpoint")
    p.add_argument("--image", type=Path, required=True, help="the query: an image or DICOM file")
    p.add_argument("--collection", required=True, help="the collection to search")
    p.add_argument("--out", type=Path, required=True, help="where to write the PNG sheet")
    p.add_argument(
        "--top-k",
        type=positive_int,
        default=DEFAULT_TOP_K,
        help=f"retrieved cases to explain (default {DEFAULT_TOP_K}, at most {MAX_TOP_K})",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_location_arguments(p)


@dataclass(frozen=True)
class Panel:
    """One picture of the sheet with its two caption lines (``pixels`` None: a grey box)."""

    pixels: np.ndarray | None  # (H, W, 3) uint8
    lines: tuple[str, str]


def sheet_size(cases: int) -> tuple[int, int]:
    """(width, height) of a sheet with ``cases`` rows of cases under the query's row."""
    width = COLUMNS * PANEL + (COLUMNS + 1) * GAP
    height = (cases + 1) * (PANEL + CAPTION + GAP) + GAP
    return width, height


def panel_origin(row: int, column: int) -> tuple[int, int]:
    """Top-left pixel of the picture in ``row`` (0: the query's), ``column``."""
    return GAP + column * (PANEL + GAP), GAP + row * (PANEL + CAPTION + GAP)


def run_explain(args: argparse.Namespace) -> int:
    from imaging.decode import ImageDecodeError
    from indexer.commands import EXPECTED, open_store
    from indexer.search import SearchError
    from model.device import DeviceError

    if args.top_k > MAX_TOP_K:
        raise CommandError(f"--top-k is at most {MAX_TOP_K}, got {args.top_k}")
    try:
        store = open_store(args)
        try:
            summary = _explain(args, store)
        finally:
            store.close()
    except FileNotFoundError as exc:
        raise CommandError(f"no such file: {exc.filename}") from exc
    except ImageDecodeError as exc:
        raise CommandError(f"{args.image} cannot be read as an image: {exc}") from exc
    except (*EXPECTED, SearchError, DeviceError) as exc:
        raise CommandError(str(exc)) from exc
    print(json.dumps(summary))
    return 0


def _explain(args: argparse.Namespace, store: MetadataStore) -> dict[str, object]:
    from files.atomic import atomic_write_bytes
    from imaging.decode import DEFAULT_LIMITS, decode_file
    from imaging.overlays import heat_overlay
    from imaging.preprocessing import fit_to_canvas
    from indexer.search import CollectionIndex
    from model.checkpoint import load_checkpoint
    from model.device import resolve_device
    from model.explain import METHOD, QueryExplainer
    from model.inference import infer
    from model.vit import MultiScaleViT, probabilities

    device = resolve_device(args.device)
    index = CollectionIndex.load(store, args.collection)  # unknown collection: fails first
    pixels = decode_file(args.image, DEFAULT_LIMITS).pixels
    loaded = load_checkpoint(args.checkpoint, device)
    network, meta = loaded.model, loaded.meta
    if not isinstance(network, MultiScaleViT):
        raise CommandError(f"{args.checkpoint} is not a multi-scale ViT: nothing to explain")
    size = meta.preprocessing.image_size
    query = fit_to_canvas(pixels, size)
    result = infer(network, query.unsqueeze(0), meta.preprocessing, device)
    hits = index.search(
        store,
        result.embeddings.numpy(),
        checkpoint_sha256=loaded.sha256,
        top_k=args.top_k,
        probabilities=probabilities(result.logits, meta.model.task).numpy(),
    )[0]
    predicted = int(result.logits[0].argmax())
    probability = _probability(result.logits[0], meta.model.task.value, predicted)
    network.eval()  # as load_checkpoint gives it; the query's side is prepared once for all
    explainer = QueryExplainer(
        network,
        query,
        meta.preprocessing,
        device,
        centre=index.centre,
        query_embedding=result.embeddings[0],
    )
    class_map = explainer.class_map(predicted)
    query_rgb = _rgb(query)
    cell = meta.model.patch_size

    rows: list[list[Panel]] = []
    cases: list[dict[str, object]] = []
    for hit in hits:
        label = _label_names(hit.case.labels, meta.labels)
        head = (f"#{hit.rank} case {hit.case.id}: {hit.case.external_id}", f"label: {label}")
        case = _case_canvas(hit.case, size, DEFAULT_LIMITS)
        if isinstance(case, str):
            rows.append(
                [Panel(None, (head[0], case)), Panel(None, ("", "")), Panel(None, ("", ""))]
            )
            cases.append({"rank": hit.rank, "case_id": hit.case.id, "unavailable": case})
            continue
        explained = explainer.similarity(case)
        case_rgb = _rgb(case)
        odds = (
            ""
            if hit.match_probability is None
            else f"P(same diagnosis) {hit.match_probability:.2f}"
        )
        rows.append(
            [
                Panel(case_rgb, head),
                Panel(
                    heat_overlay(case_rgb, explained.case_map, OPACITY, cell=cell),
                    (_map_title("the case's map", explained.case_map), f"score {hit.score:.3f}"),
                ),
                Panel(
                    heat_overlay(query_rgb, explained.query_map, OPACITY, cell=cell),
                    (_map_title(f"the query's map for #{hit.rank}", explained.query_map), odds),
                ),
            ]
        )
        cases.append(
            {
                "rank": hit.rank,
                "case_id": hit.case.id,
                "score": hit.score,
                "match_probability": hit.match_probability,
                "label": label,
            }
        )

    class_name = meta.labels.names[predicted]
    first = [
        Panel(
            query_rgb, (f"query: {args.image.name}", f"predicted: {class_name} ({probability:.2f})")
        ),
        Panel(
            heat_overlay(query_rgb, class_map, OPACITY, cell=cell),
            (_map_title(f"map of {class_name}", class_map), ""),
        ),
    ]
    notes = [
        f"collection {index.collection.name}, version {index.version.version}",
        f"checkpoint {loaded.sha256[:12]}",
        f"{len(hits)} nearest of {index.size} cases",
        "maps: integrated gradients",
        "on the tokens, all scales on the",
        "finest grid; colour = share of",
        "the largest contribution",
    ]
    atomic_write_bytes(args.out, _sheet_png([first, *rows], notes))
    log.info("wrote %s (%d cases explained)", args.out, len(hits))
    return {
        "out": str(args.out),
        "predicted": meta.labels.codes[predicted],
        "method": METHOD,
        "cases": cases,
    }


def _map_title(title: str, grid: np.ndarray) -> str:
    """The panel's title; an all-zero map (no region raises the score above the
    baseline's) says so."""
    return title if float(grid.max()) > 0 else f"{title}: empty"


def _probability(logits: torch.Tensor, task: str, index: int) -> float:
    import torch

    if task == "multi_label":
        return float(torch.sigmoid(logits[index]))
    return float(torch.softmax(logits, dim=-1)[index])


def _label_names(codes: Sequence[str], labels: LabelSpace) -> str:
    names = [labels.names[labels.codes.index(c)] if c in labels.codes else c for c in codes]
    return ", ".join(names) if names else "none"


def _rgb(canvas: torch.Tensor) -> np.ndarray:
    """A (3, H, W) uint8 canvas as (H, W, 3) uint8 pixels."""
    return canvas.permute(1, 2, 0).contiguous().numpy()


def _case_canvas(case: CaseInfo, size: tuple[int, int], limits: DecodeLimits) -> torch.Tensor | str:
    """The case's letterboxed canvas, or why it cannot be shown (gone, changed, unreadable)."""
    from archives.content import decode_content, indexed_sample, sample_content
    from imaging.decode import ImageDecodeError
    from imaging.preprocessing import fit_to_canvas

    sample = indexed_sample(case.external_id, case.source_uri)
    try:
        digest, content = sample_content(sample, limits)
        if digest != case.content_hash:
            return "changed since it was indexed"
        pixels, _ = decode_content(content, limits)
    except FileNotFoundError:
        return "no longer in the archive"
    except (ImageDecodeError, OSError, ValueError, KeyError, IndexError) as exc:
        log.warning("case %d cannot be shown: %s", case.id, exc)
        return "cannot be read"
    return fit_to_canvas(pixels, size)


def _sheet_png(rows: list[list[Panel]], notes: list[str]) -> bytes:
    import io

    from PIL import Image, ImageDraw, ImageFont

    sheet = Image.new("RGB", sheet_size(len(rows) - 1), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            _draw_panel(sheet, draw, font, panel, *panel_origin(r, c))
    x, y = panel_origin(0, 2)
    for i, line in enumerate(notes):
        draw.text((x, y + i * 14), _fit(draw, font, line), fill=INK, font=font)
    out = io.BytesIO()
    sheet.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _draw_panel(
    sheet: Image.Image,
    draw: ImageDraw.ImageDraw,
    font: Font,
    panel: Panel,
    x: int,
    y: int,
) -> None:
    from PIL import Image

    if panel.pixels is None:
        if any(panel.lines):
            draw.rectangle((x, y, x + PANEL - 1, y + PANEL - 1), fill=UNAVAILABLE)
    else:
        picture = Image.fromarray(panel.pixels)
        scale = PANEL / max(picture.size)
        width, height = round(picture.width * scale), round(picture.height * scale)
        picture = picture.resize((width, height), Image.Resampling.BILINEAR)
        sheet.paste(picture, (x + (PANEL - width) // 2, y + (PANEL - height) // 2))
    for i, line in enumerate(panel.lines):
        draw.text((x, y + PANEL + 2 + i * 13), _fit(draw, font, line), fill=INK, font=font)


def _fit(draw: ImageDraw.ImageDraw, font: Font, text: str) -> str:
    """``text`` cut (with an ellipsis) to the width of one panel."""
    if draw.textlength(text, font=font) <= PANEL:
        return text
    while text and draw.textlength(text + "...", font=font) > PANEL:
        text = text[:-1]
    return text + "..."

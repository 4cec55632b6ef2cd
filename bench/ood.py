"""How well the out-of-distribution flag separates foreign images from the collection's own.

    python bench/ood.py [--work runs/bench-load] [--data ../shared/data]
                        [--reference-cases 500] [--rates 0.01 0.05]

Uses the "ham" collection that ``bench/load.py`` builds (all 5,105 HAM10000 images) and
the service itself (in process, lifespan included, so the calibration is the one the
service computes at load). Sends every HAM10000 test-split image (dermoscopy: should not
be flagged) and every ChestX-ray14 and PneumoniaMNIST image present (chest X-rays: should
be flagged) to ``POST /query`` and prints the flagged share of each, for the default
false-alarm rate and a 5 % one.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import load_settings

REPO = Path(__file__).resolve().parents[1]


def pneumonia_pngs(npz: Path, count: int) -> list[bytes]:
    with np.load(npz) as data:
        images = data["test_images"][:count]
    out = []
    for pixels in images:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-load")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--reference-cases", type=int, default=500)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.05])
    args = parser.parse_args()
    work = args.work.resolve()
    ham = args.data / "ham10000"
    rows = [r for r in csv.DictReader((ham / "labels.csv").open()) if r["split"] == "test"]
    sets = {
        "HAM10000 test split (dermoscopy, in distribution)": [
            (ham / r["file"]).read_bytes() for r in rows
        ],
        "ChestX-ray14 (chest X-ray)": [
            p.read_bytes() for p in sorted((args.data / "chestxray14" / "images").iterdir())
        ],
        "PneumoniaMNIST test (chest X-ray, 28 px)": pneumonia_pngs(
            args.data / "pneumoniamnist" / "pneumoniamnist.npz", 200
        ),
    }
    for rate in args.rates:
        settings = load_settings(
            data_dir=work / "data",
            database_url=f"sqlite:///{work / 'medret.db'}",
            ood_false_alarm_rate=rate,
            ood_reference_cases=args.reference_cases,
            log_level="WARNING",
        )
        with TestClient(create_app(settings)) as client:
            threshold = client.get("/collections").json()[0]["ood_threshold"]
            print(
                f"{args.reference_cases} reference cases, false-alarm rate {rate:.0%}: "
                f"threshold {threshold:.2f}"
            )
            for name, images in sets.items():
                flagged = []
                for data in images:
                    answer = client.post("/query", files={"file": ("q", data)})
                    answer.raise_for_status()
                    flagged.append(answer.json()["out_of_distribution"]["flagged"])
                print(f"  {name}: {np.mean(flagged):.1%} flagged of {len(flagged)}")


if __name__ == "__main__":
    main()

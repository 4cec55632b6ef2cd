"""Peak memory of small-but-expensive uploads: what each costs the server, alone and eight
at once.

    python bench/decode_memory.py [--concurrent 8] [--repeat 3]

Starts ``medret serve`` (its default settings: 32 MiB uploads, 64 megapixels, 256 MiB
decoded, a 1 GiB decode budget) over a tiny generated collection, then sends each input of
the corpus in ``tests/support/expensive_inputs.py`` (deflated 16-bit RGB DICOM of 8000²
and 4000², a deflated 16-bit grey 8000², RLE 16-bit 8000², a 500,000-item functional
groups sequence, RGBA and 16-bit PNG, an 8000² JPEG) ``--repeat`` times and prints, for
each, the upload size, the status, the median time and the median increase of the
server's peak RSS (``VmHWM`` after the request minus ``VmRSS`` before it; Linux only), with
the goal: at most 8 × the decoded image's uint8 size + 64 MB. Then it sends
``--concurrent`` copies of each accepted input at once and prints the peak RSS above the
server's RSS before the burst (goal: under 2 GB).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]  # the project's packages first,
sys.path.append(str(REPO / "tests"))  # then the corpus and the live-server helpers

from support.expensive_inputs import CORPUS  # noqa: E402
from support.memory import post_and_measure, tiny_service  # noqa: E402
from support.server import start_server  # noqa: E402

MB = 1e6
SINGLE_SLACK = 64 * MB
CONCURRENT_GOAL = 2e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrent", type=int, default=8, help="copies sent at once")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per input (median)")
    args = parser.parse_args()
    print(f"# {dt.datetime.now():%Y-%m-%d %H:%M}, {platform.node()}, {platform.processor()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = tiny_service(root)
        with start_server(env, root / "server.log") as server:
            pid = server.process.pid
            inputs = [(case, case.build()) for case in CORPUS]
            print(f"{'input':42} {'upload':>9} {'status':>6} {'time':>7} {'peak +':>9} {'goal':>9}")
            failures = 0
            for case, data in inputs:
                rounds = [post_and_measure(server.url, pid, data) for _ in range(args.repeat)]
                status = rounds[0].statuses[0]
                seconds = statistics.median(r.seconds for r in rounds)
                increase = statistics.median(r.peak_increase for r in rounds)
                goal = 8 * case.uint8_bytes + SINGLE_SLACK
                met = increase <= goal
                failures += not met
                print(
                    f"{case.name:42} {len(data) / 1024:7.0f} KB {status:>6} {seconds:6.2f}s "
                    f"{increase / MB:7.0f} MB {goal / MB:7.0f} MB {'' if met else 'OVER'}"
                )
                if status != 200:
                    print(f"{'':44}→ {rounds[0].details[0]}")
            print(f"\n{args.concurrent} at once:")
            worst = 0.0
            for case, data in inputs:
                if case.uint8_bytes == 0:
                    continue  # refused from the header: costs nothing
                burst = post_and_measure(server.url, pid, data, copies=args.concurrent)
                worst = max(worst, burst.peak_increase)
                codes = ",".join(sorted({str(code) for code in burst.statuses}))
                print(
                    f"{case.name:42} statuses {codes:>8} {burst.seconds:6.2f}s "
                    f"peak +{burst.peak_increase / MB:6.0f} MB"
                )
            met = worst < CONCURRENT_GOAL
            failures += not met
            print(
                f"\nworst burst: +{worst / MB:.0f} MB above the server's RSS "
                f"(goal < {CONCURRENT_GOAL / MB:.0f} MB): {'met' if met else 'NOT MET'}"
            )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""diffcli batch vs a shell loop of diffcli txt2img calls, for the same images.

    python bench/batch.py --prompts 20 --seeds 5 --model tiny       # the issue's 100 images
    python bench/batch.py --prompts 4 --seeds 2 --model tiny-lcm
    python bench/batch.py --prompts 20 --seeds 5 --no-loop --batch-sizes 1,2,4,8   # images/s vs --batch-size

Each image is one `python -m diffcli txt2img PROMPT --seed S` process in the loop, and one line of a
job list for `diffcli batch`. The two runs alternate (loop, batch, loop, batch, ...) --rounds times;
the ratio of their median wall times is printed, with images/s. Both make the same pixels
(tests/test_batch.py checks that), so only time differs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = [
    "red house on the left",
    "blue car at night",
    "snowy castle",
    "green tree in a field",
    "yellow sun over the sea",
    "small boat on a lake",
    "white tower at dusk",
    "red car on a road",
    "castle at dusk",
    "purple flower",
    "dog on the grass",
    "house on the right, snowy ground",
    "tree at night",
    "sea at sunrise",
    "tower in the fog",
    "boat at sunset",
    "blue house",
    "green car",
    "yellow flower on the left",
    "castle on the right",
]


def _loop(jobs: list[dict], model: str, out: Path) -> float:
    t0 = time.perf_counter()
    for job in jobs:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "diffcli",
                "txt2img",
                job["prompt"],
                "--seed",
                str(job["seed"]),
                "--model",
                model,
                "-o",
                str(out),
                "-q",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return time.perf_counter() - t0


def _batch(jobs: list[dict], model: str, out: Path, batch_size: int | None) -> float:
    listing = out.parent / f"{out.name}.jsonl"
    listing.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    extra = ["--batch-size", str(batch_size)] if batch_size else []
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "diffcli", "batch", str(listing), "--model", model, "-o", str(out), "-q", *extra],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--no-loop", action="store_true", help="skip the shell loop (for --batch-sizes alone)")
    ap.add_argument("--batch-sizes", default="", help="also time diffcli batch at each --batch-size, e.g. 1,2,4,8")
    args = ap.parse_args()
    jobs = [{"prompt": p, "seed": s} for p in PROMPTS[: args.prompts] for s in range(args.seeds)]
    n = len(jobs)
    print(f"model {args.model}, {n} images ({args.prompts} prompts x {args.seeds} seeds), {args.rounds} round(s)")
    sizes = [int(x) for x in args.batch_sizes.split(",") if x.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_loop:
            loops, batches = [], []
            for r in range(args.rounds):
                loops.append(_loop(jobs, args.model, Path(tmp) / f"loop{r}"))
                batches.append(_batch(jobs, args.model, Path(tmp) / f"batch{r}", None))
            loop, batch = statistics.median(loops), statistics.median(batches)
            print(f"shell loop of txt2img: {loop:7.1f} s  ({n / loop:.2f} images/s)")
            print(f"diffcli batch:         {batch:7.1f} s  ({n / batch:.2f} images/s)")
            print(f"batch is {loop / batch:.1f}x faster")
        base = None
        for r in range(args.rounds):
            for size in sizes:
                t = _batch(jobs, args.model, Path(tmp) / f"bs{size}-{r}", size)
                base = base or t
                print(
                    f"--batch-size {size}: {t:6.1f} s  ({n / t:.2f} images/s, {base / t:.2f}x of --batch-size "
                    f"{sizes[0]})"
                )


if __name__ == "__main__":
    main()

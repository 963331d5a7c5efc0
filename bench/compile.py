"""Compiled execution: `diffcli batch --compile` vs eager, bundled model `tiny` at its defaults.

Two processes, one after the other: `diffcli batch` of N one-image jobs (the same prompt, seeds
1..N) eager, then with --compile. Each job's time is read from its own `done` event (total_s: load
or cache lookup, denoise, decode, save). Printed: the first image's time in each mode, the compile
cost (the first compiled image minus the eager per-image time), per-image time after warm-up (the
median of images 3..N; the first compiled image can compile twice: a --cfg-cutoff model's batch
halves part-way, a new shape), their ratio, the break-even number of images (the compile cost over
the time saved per image; none when compiled is not faster), and the largest pixel difference
between the compiled and eager image of each seed (0-255 levels).

    python bench/compile.py [--images 20] [--model tiny] [--threads N] [--dtype float32]
        [--options "--steps 10 -W 512 -H 512"]   (more `diffcli batch` options, both processes)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time


def run(
    mode: str, jobs: str, out: str, model: str, threads: int | None, dtype: str = "float32", options: str = ""
) -> tuple[list[float], list[str], float, str]:
    cmd = [sys.executable, "-m", "diffcli", "batch", jobs, "-m", model, "--dtype", dtype, "--json", "-o", out]
    cmd += shlex.split(options)
    if mode == "compiled":
        cmd.append("--compile")
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode:
        sys.exit(f"{mode}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    times, notes = [], ""
    for line in proc.stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "done" and "total_s" in event:
            times.append(event["total_s"])
        if event.get("event") == "info" and "compiled" in event.get("message", ""):
            notes = event["message"]
    paths = [json.loads(line)["path"] for line in proc.stdout.splitlines() if line.strip()]
    return times, paths, wall, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", default="float32", help="auto: diffcli's choice (bfloat16 on native-bf16 CPUs)")
    parser.add_argument("--options", default="", help="more diffcli batch options, e.g. '--steps 10 -W 512 -H 512'")
    args = parser.parse_args()
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        jobs = os.path.join(tmp, "jobs.jsonl")
        with open(jobs, "w") as f:
            for seed in range(1, args.images + 1):
                f.write(json.dumps({"prompt": "red house on the left, snowy ground", "seed": seed}) + "\n")
        results = {}
        for mode in ("eager", "compiled"):
            results[mode] = run(mode, jobs, os.path.join(tmp, mode), args.model, args.threads, args.dtype, args.options)
            times, _, wall, note = results[mode]
            print(
                f"{mode:9s} process {wall:6.1f} s; image 1 {times[0]:6.2f} s, image 2 {times[1]:.2f} s, "
                f"median of images 3..{len(times)} {statistics.median(times[2:]):.3f} s",
                flush=True,
            )
            if note:
                print(f"          reported: {note}")
        eager, compiled = results["eager"][0], results["compiled"][0]
        e_per, c_per = statistics.median(eager[2:]), statistics.median(compiled[2:])
        cost = compiled[0] - e_per
        saved = e_per - c_per
        print(f"compile cost ~{cost:.1f} s (first compiled image {compiled[0]:.2f} s - eager per image {e_per:.3f} s)")
        print(
            f"per image after warm-up: eager {e_per:.3f} s, compiled {c_per:.3f} s, eager/compiled {e_per / c_per:.2f}x"
        )
        print(f"break-even: {cost / saved:.0f} images" if saved > 0 else "break-even: never (compiled is not faster)")
        diffs = [
            np.abs(np.asarray(Image.open(a), dtype=np.int16) - np.asarray(Image.open(b), dtype=np.int16)).max()
            for a, b in zip(results["eager"][1], results["compiled"][1])
        ]
        print(f"largest pixel difference compiled vs eager: {max(diffs)} levels (over {len(diffs)} images)")


if __name__ == "__main__":
    main()

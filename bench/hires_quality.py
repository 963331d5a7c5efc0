"""What the hires fix's strength does on the bundled model: `diffcli batch` runs txt2img at 64x64 and the same
jobs with `--hires 2` at several `--hires-strength` values (lanczos upscale, the default), on held-out prompts.

For each strength, on the 128x128 results:
- adherence: the bundled evaluator (on the result resized to 64x64) sees every attribute the prompt states;
- kept: it sees the same attributes as on the first pass (the hires pass kept the composition);
- detail: the mean variance of the Laplacian (high frequencies) of the result, over that of the first pass
  upscaled by lanczos (1.0: the pass added no detail over a plain resample);
- seconds per image (both passes), from the batch's own timing.

    python bench/hires_quality.py [-n 40] [--strengths 0.2,0.3,0.5,0.7] [--model tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))

from diffcli.bundled.evaluator import load_evaluator  # noqa: E402

from bundled_quality import heldout_prompts  # noqa: E402


def batch(lines: list[dict], model: str, out: Path, threads: int) -> float:
    """Run the lines through `diffcli batch`; seconds per image (wall time over the lines, model load included
    once)."""
    jobs = out / "jobs.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    jobs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    env = {"OMP_NUM_THREADS": str(threads)}
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "diffcli", "batch", str(jobs), "-m", model, "-o", str(out / "img"), "--quiet"],
        check=True,
        env={**os.environ, **env},
    )
    return (time.perf_counter() - t) / len(lines)


def images(folder: Path) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted((folder / "img").glob("*.png"))]


def laplacian_var(img: Image.Image) -> float:
    edges = np.asarray(img.convert("L").filter(ImageFilter.FIND_EDGES), dtype=np.float64)[1:-1, 1:-1]
    return float(edges.var())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=40, help="prompts (one seed each)")
    ap.add_argument("--strengths", default="0.2,0.3,0.5,0.7")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=4242, help="prompt seed (held out from the recipe)")
    args = ap.parse_args()
    prompts = heldout_prompts(args.n, seed=args.seed)
    ev = load_evaluator()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base_lines = [{"prompt": p, "seed": i} for i, p in enumerate(prompts)]
        secs = batch(base_lines, args.model, tmp / "base", args.threads)
        base = images(tmp / "base")
        base_preds = ev.predict(base)
        base_up = [b.resize((b.width * 2, b.height * 2), Image.LANCZOS) for b in base]
        base_detail = np.mean([laplacian_var(b) for b in base_up])
        rows["first pass only (64x64)"] = {**ev.score(prompts, base), "kept": 1.0, "detail": float("nan"), "s": secs}
        rows["first pass, lanczos x2"] = {**ev.score(prompts, base), "kept": 1.0, "detail": 1.0, "s": secs}
        for s in [float(x) for x in args.strengths.split(",")]:
            lines = [{**line, "hires": 2, "hires_strength": s} for line in base_lines]
            secs = batch(lines, args.model, tmp / f"s{s}", args.threads)
            out = images(tmp / f"s{s}")
            small = [o.resize((64, 64), Image.LANCZOS) for o in out]
            preds = ev.predict(small)
            kept = np.mean([p == b for p, b in zip(preds, base_preds)])
            detail = np.mean([laplacian_var(o) for o in out]) / base_detail
            rows[f"--hires 2 --hires-strength {s}"] = {**ev.score(prompts, small), "kept": float(kept),
                                                      "detail": float(detail), "s": secs}  # fmt: skip
    print(f"\n{args.n} held-out prompts (seed {args.seed}), model {args.model}, {args.threads} threads\n")
    print(f"| {'run':<34} | adherence | kept | detail | s / image |")
    print(f"|{'-' * 36}|-----------|------|--------|-----------|")
    for k, r in rows.items():
        print(f"| {k:<34} | {r['adherence']:9.3f} | {r['kept']:4.2f} | {r['detail']:6.2f} | {r['s']:9.2f} |")


if __name__ == "__main__":
    main()

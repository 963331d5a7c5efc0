"""What step caching (`--cache deepcache:N`, diffcli.cache) costs on the bundled model, and what it saves.

    python bench/cache_quality.py [--n 200] [--seeds 1] [--intervals 2,3,4] [--timing 12] [--json FILE]

The bundled model (alias `tiny`) at its own defaults (steps, cfg, cfg-cutoff, sampler from its
diffcli.json), on N held-out scenes (bundled_quality.heldout_prompts, the seed training never used),
each prompt with the same seed uncached and with each interval. Prints, per interval: adherence and
Fréchet distance (the scene evaluator, as bench/bundled_quality.py scores them) and their ratios to
the uncached run, the mean absolute pixel difference to the uncached images (0-255), and the wall time
of the denoising loop relative to uncached (batch 1, latents out so the VAE decode is not counted; the
runs of all settings interleaved, the median of --timing calls each).
Bars (issue 20): adherence ratio >= 0.97, FD ratio <= 1.15.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from diffcli import guidance  # noqa: E402
from diffcli.bundled import MODEL_DIR, defaults  # noqa: E402
from diffcli.bundled.evaluator import load_evaluator  # noqa: E402
from diffcli.cache import active  # noqa: E402

from bundled_quality import generate, heldout_prompts  # noqa: E402

BARS = {"adherence_ratio": 0.97, "fd_ratio": 1.15}


class Cached:
    """PIPE called with the step cache SPEC on for each call, as diffcli's engine calls it."""

    def __init__(self, pipe, spec: str) -> None:
        self.pipe, self.spec = pipe, spec

    def __call__(self, *args, **kwargs):
        with active(self.pipe, self.spec):
            return self.pipe(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.pipe, name)


def load(scheduler: str):
    import diffusers

    from diffcli.schedulers import build

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(MODEL_DIR), torch_dtype=torch.float32)
    pipe.scheduler = build(scheduler, dict(pipe.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def loop_seconds(pipes: dict, steps: int, cfg: float, cutoff: float, calls: int) -> dict:
    """Median seconds of one batch-1 call (latents out) per setting, the settings interleaved."""
    times = {spec: [] for spec in pipes}
    for i in range(calls + 1):
        for spec, pipe in pipes.items():
            t = time.perf_counter()
            pipe(
                "red house on the left, snowy ground, at night",
                num_inference_steps=steps,
                output_type="latent",
                generator=torch.Generator().manual_seed(i),
                **guidance.pipeline_kwargs(pipe, cfg, cutoff, steps),
            )
            if i:  # the first round warms up
                times[spec].append(time.perf_counter() - t)
    return {spec: statistics.median(ts) for spec, ts in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="held-out scenes")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--intervals", default="2,3,4")
    ap.add_argument("--timing", type=int, default=12, help="timed calls per setting (0: no timing)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    d = defaults()
    steps, cfg, cutoff = d["steps"], d["cfg"], d.get("cfg_cutoff", 0.0)
    base = load(d["scheduler"])
    specs = ["none"] + [f"deepcache:{int(n)}" for n in a.intervals.split(",")]
    pipes = {spec: Cached(base, spec) for spec in specs}
    ev = load_evaluator()
    prompts = heldout_prompts(a.n)
    out = {
        "model": "tiny",
        "steps": steps,
        "cfg": cfg,
        "cfg_cutoff": cutoff,
        "scheduler": d["scheduler"],
        "n_scenes": a.n,
        "seeds": a.seeds,
        "settings": {},
    }
    arrays = {}
    with torch.no_grad():
        for spec in specs:
            t = time.perf_counter()
            images, used = generate(pipes[spec], prompts, range(a.seeds), steps, cfg, cutoff)
            seconds = time.perf_counter() - t
            sc = ev.score(used, images, seed=1)
            arrays[spec] = np.stack([np.asarray(im, dtype=np.float32) for im in images])
            row = {
                "adherence": round(sc["adherence"], 4),
                "fd": round(sc["fd"], 2),
                "accuracy": {k: round(v, 3) for k, v in sc["accuracy"].items()},
                "batched_seconds": round(seconds, 1),
            }
            if spec != "none":
                ref = out["settings"]["none"]
                row.update(
                    adherence_ratio=round(sc["adherence"] / max(ref["adherence"], 1e-9), 4),
                    fd_ratio=round(sc["fd"] / max(ref["fd"], 1e-9), 4),
                    mean_abs_diff=round(float(np.abs(arrays[spec] - arrays["none"]).mean()), 2),
                )
                row["bars_met"] = (
                    row["adherence_ratio"] >= BARS["adherence_ratio"] and row["fd_ratio"] <= BARS["fd_ratio"]
                )
            out["settings"][spec] = row
            print(json.dumps({spec: row}), flush=True)
        if a.timing:
            secs = loop_seconds(pipes, steps, cfg, cutoff, a.timing)
            for spec, s in secs.items():
                out["settings"][spec]["loop_seconds"] = round(s, 4)
                out["settings"][spec]["loop_time_ratio"] = round(s / secs["none"], 3)
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()

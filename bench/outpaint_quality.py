"""What proves `diffcli outpaint`, measured on the bundled model with its evaluator.

Each case: a 64x64 render of a held-out scene, extended left and right (default 32 px each side, a
128x64 canvas), painted by the bundled model through diffcli's own outpaint pieces (the canvas and
mask of diffcli.outpaint, the model's inpaint pipeline with the model's default settings, and
run.composite with the job's feather). Measured per setting:

- continues: the new area alone (the left and right strips side by side, 64x64) shows the source
  scene's time of day AND ground by the evaluator (bar: >= 0.9);
- time / ground: each of the two alone;
- max_change_original: the largest change of any pixel inside the original rectangle (bar: 0);
- reference: the evaluator on the same strips of a true wider render of each scene (what a perfect
  continuation scores with this way of measuring).

Prompts: "caption" = the source scene described in full (what a user would write), "time+ground" =
only its time of day and ground, "none" = empty (the image alone must carry the scene).

    python bench/outpaint_quality.py [-n 200] [--extend 32,0,32,0] [--threads 1] \\
        [--settings blur:1.0:caption,blur:1.0:none,...] [--json out.json]

A setting is FILL:STRENGTH:PROMPT. Use --threads 1 on a busy machine (two threads stall when the
cores are shared).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np
import torch
from PIL import Image

from diffcli import guidance
from diffcli.bundled import scenes
from diffcli.bundled.evaluator import load_evaluator
from diffcli.device import choose
from diffcli.models import resolve
from diffcli.models.layout import read_layout
from diffcli.outpaint import plan, prepare
from diffcli.pipelines import load_base, set_scheduler, task_pipeline
from diffcli.run import composite
from diffcli.settings import TASK_BUILTIN

DEFAULT_SETTINGS = (
    "blur:0.9:caption",
    "blur:0.9:none",
    "edge:0.9:none",
    "noise:0.9:none",
    "blur:1.0:caption",
    "blur:1.0:none",
)


def _prompt(kind: str, scene, rng) -> str:
    if kind == "caption":
        return scenes.caption(scene, rng, drop_prob=0.0)
    if kind == "time+ground":
        return f"{scene.time}, {scene.ground}"
    return ""


def _new_area(image: Image.Image, canvas) -> Image.Image:
    """The pixels outpaint added, the strips of each side put together (left|right, then top/bottom)."""
    a = np.asarray(image)
    c = canvas
    parts = [p for p in (a[:, : c.left], a[:, a.shape[1] - c.right :]) if p.shape[1]]
    if parts:
        return Image.fromarray(np.concatenate(parts, axis=1))
    return Image.fromarray(np.concatenate([p for p in (a[: c.top], a[a.shape[0] - c.bottom :]) if p.shape[0]], 0))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--extend", default="32,0,32,0")
    parser.add_argument("--settings", default=",".join(DEFAULT_SETTINGS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ref = resolve("tiny", offline=True)
    rec = read_layout(ref.path).recommended()
    pipe = task_pipeline(load_base(ref, choose("cpu", args.dtype)), "inpaint")
    set_scheduler(pipe, rec["scheduler"])
    blur = TASK_BUILTIN["outpaint"]["mask_blur"]
    ev = load_evaluator()
    rng = random.Random(20261201)
    sources = [scenes.sample_scene(rng) for _ in range(args.n)]
    inputs = [scenes.render(s, 64) for s in sources]
    canvas = plan((64, 64), args.extend, None, None, None, 8)
    prompts = {k: [_prompt(k, s, rng) for s in sources] for k in ("caption", "time+ground", "none")}
    wide = [scenes.render(s, (canvas.width, canvas.height)) for s in sources]
    truth = ev.predict([_new_area(w, canvas) for w in wide])
    results = {
        "n": args.n,
        "extend": canvas.extend,
        "canvas": f"{canvas.width}x{canvas.height}",
        "settings": {k: rec[k] for k in ("steps", "cfg", "cfg_cutoff", "scheduler")},
        "mask_blur": blur,
        "reference": _scores(truth, sources),
        "runs": {},
    }
    print(json.dumps({"reference": results["reference"]}), flush=True)
    for setting in args.settings.split(","):
        fill, strength, kind = setting.split(":")
        strength = float(strength)
        t0 = time.perf_counter()
        prepared = [prepare(im, canvas, fill) for im in inputs]
        finals = []
        for i in range(0, args.n, args.batch):
            part = prepared[i : i + args.batch]
            gens = [torch.Generator("cpu").manual_seed(k) for k in range(i, i + len(part))]
            out = pipe(
                prompts[kind][i : i + len(part)],
                image=[c for c, _ in part],
                mask_image=[m for _, m in part],
                width=canvas.width,
                height=canvas.height,
                strength=strength,
                generator=gens,
                num_inference_steps=rec["steps"],
                **guidance.pipeline_kwargs(pipe, rec["cfg"], rec.get("cfg_cutoff"), rec["steps"], strength),
            ).images
            finals += [composite(c, o, m, blur) for (c, m), o in zip(part, out)]
        worst = 0
        for src, final in zip(inputs, finals):
            inside = np.asarray(final, dtype=np.int16)[canvas.top : canvas.top + 64, canvas.left : canvas.left + 64]
            worst = max(worst, int(np.abs(inside - np.asarray(src, dtype=np.int16)).max()))
        scores = _scores(ev.predict([_new_area(f, canvas) for f in finals]), sources)
        scores.update(max_change_original=worst, seconds=round(time.perf_counter() - t0, 1))
        results["runs"][setting] = scores
        print(json.dumps({setting: scores}), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


def _scores(preds, sources) -> dict:
    time_ok = [p["time"] == s.time for p, s in zip(preds, sources)]
    ground_ok = [p["ground"] == s.ground for p, s in zip(preds, sources)]
    return {
        "continues": float(np.mean([a and b for a, b in zip(time_ok, ground_ok)])),
        "time": float(np.mean(time_ok)),
        "ground": float(np.mean(ground_ok)),
    }


if __name__ == "__main__":
    main()

"""What proves the edit commands, measured on the bundled model with its evaluator.

- img2img at strength 0.3: how often the input's time of day, ground and object survive (bar: >= 90 %),
  (a) with the input's own scene described in another colour (an edit), (b) with a prompt for an
  unrelated scene (adversarial: every attribute may contradict the input).
- img2img at strength 1.0 vs txt2img: prompt adherence of each on the same prompts and seeds.
- inpaint (ordinary 4-channel model + composite): the largest pixel change outside the mask.

Runs in-process through diffcli's own pipeline layer, with the model's default settings.

    python bench/bundled_edits.py [-n 200] [--dtype auto]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import replace

import numpy as np
import torch
from PIL import Image

from diffcli import guidance
from diffcli.bundled import scenes
from diffcli.bundled.evaluator import load_evaluator
from diffcli.device import choose
from diffcli.models import resolve
from diffcli.models.layout import read_layout
from diffcli.pipelines import load_base, set_scheduler, task_pipeline
from diffcli.run import composite

KEPT = ("time", "ground", "obj")


def _pipes(dtype: str):
    ref = resolve("tiny", offline=True)
    rec = read_layout(ref.path).recommended()
    base = load_base(ref, choose("cpu", dtype))
    pipes = {task: task_pipeline(base, task) for task in ("txt2img", "img2img", "inpaint")}
    for pipe in pipes.values():
        set_scheduler(pipe, rec["scheduler"])
    return pipes, rec


def _run(pipe, rec, prompts, seeds, batch=25, **kwargs):
    out = []
    for i in range(0, len(prompts), batch):
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds[i : i + batch]]
        extra = {k: v[i : i + batch] if isinstance(v, list) else v for k, v in kwargs.items()}
        out += pipe(
            prompts[i : i + batch],
            num_inference_steps=rec["steps"],
            generator=gens,
            **extra,
            **guidance.pipeline_kwargs(pipe, rec["cfg"], rec.get("cfg_cutoff"), rec["steps"], kwargs.get("strength")),
        ).images
    return out


def _kept(preds, sources) -> float:
    return float(np.mean([all(p[a] == getattr(s, a) for a in KEPT) for p, s in zip(preds, sources)]))


def _kept_each(preds, sources) -> dict:
    return {a: float(np.mean([p[a] == getattr(s, a) for p, s in zip(preds, sources)])) for a in KEPT}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    rng = random.Random(20261127)
    pipes, rec = _pipes(args.dtype)
    ev = load_evaluator()
    sources = [scenes.sample_scene(rng) for _ in range(args.n)]
    inputs = [scenes.render(s, 64) for s in sources]
    others = [scenes.sample_scene(rng) for _ in range(args.n)]
    prompts = [scenes.caption(o, rng, drop_prob=0.0) for o in others]
    seeds = list(range(args.n))
    results = {"n": args.n, "settings": rec}

    t0 = time.perf_counter()
    # (a) an edit: the input's own scene described with another colour (what img2img is used for)
    recolour = [replace(s, color=rng.choice([c for c in scenes.COLORS if c != s.color])) for s in sources]
    edit_prompts = [scenes.caption(r, rng, drop_prob=0.0) for r in recolour]
    low = _run(pipes["img2img"], rec, edit_prompts, seeds, image=inputs, strength=0.3)
    preds = ev.predict(low)
    results["img2img_0.3_recolour_keeps_time_ground_object"] = _kept(preds, sources)
    results["img2img_0.3_recolour_per_attribute_kept"] = _kept_each(preds, sources)
    results["img2img_0.3_recolour_new_colour"] = float(
        np.mean([p["color"] == r.color for p, r in zip(preds, recolour)])
    )
    # (b) adversarial: a prompt for an unrelated scene (every attribute may contradict the input)
    low = _run(pipes["img2img"], rec, prompts, seeds, image=inputs, strength=0.3)
    preds = ev.predict(low)
    results["img2img_0.3_other_scene_keeps_time_ground_object"] = _kept(preds, sources)
    results["img2img_0.3_other_scene_per_attribute_kept"] = _kept_each(preds, sources)

    full = _run(pipes["img2img"], rec, prompts, seeds, image=inputs, strength=1.0)
    txt = _run(pipes["txt2img"], rec, prompts, seeds)
    results["img2img_1.0_adherence"] = ev.score(prompts, full)["adherence"]
    results["txt2img_adherence_same_prompts"] = ev.score(prompts, txt)["adherence"]

    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[16:48, 16:48] = 255
    mask_img = Image.fromarray(mask)
    painted = _run(pipes["inpaint"], rec, prompts, seeds, image=inputs, mask_image=mask_img, strength=1.0)
    worst_outside, mean_inside = 0, []
    for src, out in zip(inputs, painted):
        final = np.asarray(composite(src, out, mask_img, 4), dtype=np.int16)
        before = np.asarray(src, dtype=np.int16)
        worst_outside = max(worst_outside, int(np.abs(final - before)[mask == 0].max()))
        mean_inside.append(float(np.abs(final - before)[mask > 0].mean()))
    results["inpaint_max_change_outside_mask"] = worst_outside
    results["inpaint_mean_change_inside_mask"] = float(np.mean(mean_inside))
    results["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Quality bench of the bundled ControlNet `tiny-control-seg` on held-out scenes (plain diffusers).

    python bench/control_quality.py [--controlnet DIR] [--n 200] [--seeds 2] [--scale 1.0] [--threads 1]

For each held-out scene (a seed training never uses) the prompt is a caption of it and the control map
is its object's silhouette as the renderer draws it (`scenes.control_map`). Each prompt is generated
with and without the map, at the bundled model's defaults (15 steps, cfg 5, cfg cutoff 0.3, dpm++2m),
with the same seeds. Measured by the scene segmenter (`diffcli.bundled.segmenter`, trained on renders)
and the attribute evaluator:

- silhouette IoU: the generated object's mask vs the control map (also without control: the baseline)
- prompt adherence with control / without (every stated attribute right), and its ratio
- position accuracy with a control map: the evaluator's position vs the scene's

Bars: mean IoU >= 0.8; adherence ratio >= 0.95; position accuracy >= 0.98.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from diffcli import guidance  # noqa: E402
from diffcli.bundled import MODEL_DIR, defaults, scenes  # noqa: E402
from diffcli.bundled.evaluator import load_evaluator  # noqa: E402
from diffcli.bundled.segmenter import iou, load_segmenter  # noqa: E402
from diffcli.models.controlnets import bundled_dir  # noqa: E402

BARS = {"iou": 0.8, "adherence_ratio": 0.95, "position": 0.98}


def heldout(n: int, seed: int = 777001, drop_prob: float = 0.25):
    """N held-out scenes, a caption of each (at least one attribute stated) and its control map."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        sc = scenes.sample_scene(rng)
        p = scenes.caption(sc, rng, drop_prob=drop_prob)
        if scenes.parse_prompt(p)[0]:
            out.append((sc, p, scenes.control_map(sc, 64)))
    return out


def pipes(controlnet_dir):
    import diffusers

    from diffcli.schedulers import build

    base = diffusers.StableDiffusionPipeline.from_pretrained(str(MODEL_DIR), torch_dtype=torch.float32)
    base.scheduler = build(defaults()["scheduler"], dict(base.scheduler.config))
    cn = diffusers.ControlNetModel.from_pretrained(str(controlnet_dir), torch_dtype=torch.float32)
    ctl = diffusers.StableDiffusionControlNetPipeline.from_pipe(base, controlnet=cn)
    for p in (base, ctl):
        p.set_progress_bar_config(disable=True)
    return base, ctl


def generate(pipe, items, seeds, scale=None, batch=25):
    d = defaults()
    steps, cfg, cutoff = d["steps"], d["cfg"], d.get("cfg_cutoff", 0.0)
    images = []
    for s in seeds:
        for i in range(0, len(items), batch):
            chunk = items[i : i + batch]
            gens = [torch.Generator().manual_seed(s * 100003 + i + j) for j in range(len(chunk))]
            extra = {} if scale is None else {"image": [m for _, _, m in chunk], "controlnet_conditioning_scale": scale}
            images += pipe(
                [p for _, p, _ in chunk],
                num_inference_steps=steps,
                generator=gens,
                width=64,
                height=64,
                **extra,
                **guidance.pipeline_kwargs(pipe, cfg, cutoff, steps),
            ).images
    return images


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--controlnet", default=str(bundled_dir("tiny-control-seg")))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    items = heldout(a.n)
    seeds = list(range(1, a.seeds + 1))
    base, ctl = pipes(a.controlnet)
    with torch.no_grad():
        with_ctl = generate(ctl, items, seeds, scale=a.scale)
        without = generate(base, items, seeds)
    t_gen = time.time() - t0
    ev, seg = load_evaluator(), load_segmenter()
    truth = np.stack([scenes.object_mask(sc, 64) for sc, _, _ in items] * len(seeds))
    prompts = [p for _, p, _ in items] * len(seeds)
    iou_ctl = iou(seg.masks(with_ctl), truth)
    iou_free = iou(seg.masks(without), truth)
    s_ctl, s_free = ev.score(prompts, with_ctl), ev.score(prompts, without)
    pos_truth = [sc.position for sc, _, _ in items] * len(seeds)
    pos_ctl = float(np.mean([p["position"] == t for p, t in zip(ev.predict(with_ctl), pos_truth)]))
    pos_free = float(np.mean([p["position"] == t for p, t in zip(ev.predict(without), pos_truth)]))
    out = {
        "n_scenes": a.n,
        "seeds": a.seeds,
        "images": len(with_ctl),
        "scale": a.scale,
        "iou_mean": float(iou_ctl.mean()),
        "iou_median": float(np.median(iou_ctl)),
        "iou_at_least_0.8": float((iou_ctl >= 0.8).mean()),
        "iou_without_control": float(iou_free.mean()),
        "adherence_with": s_ctl["adherence"],
        "adherence_without": s_free["adherence"],
        "adherence_ratio": s_ctl["adherence"] / max(s_free["adherence"], 1e-9),
        "accuracy_with": s_ctl["accuracy"],
        "accuracy_without": s_free["accuracy"],
        "position_with_control": pos_ctl,
        "position_without_control_all_scenes": pos_free,
        "seconds": round(time.time() - t0, 1),
        "seconds_generating": round(t_gen, 1),
    }
    out["bars"] = {
        "iou": out["iou_mean"] >= BARS["iou"],
        "adherence_ratio": out["adherence_ratio"] >= BARS["adherence_ratio"],
        "position": pos_ctl >= BARS["position"],
    }
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

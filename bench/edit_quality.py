"""How well the bundled editing model `tiny-edit` follows an instruction and keeps the rest, against img2img.

On held-out scenes (an RNG seed the recipe never used) and held-out phrasings (diffcli.training.edit.HELD_OUT),
N edits per attribute (time of day, colour, ground, object, position), each an exact pair rendered by
diffcli.bundled.scenes: the input, and the same scene with that one attribute changed.

- success: the bundled evaluator predicts the instructed new value for the changed attribute;
- preservation: it predicts every other attribute as it predicts them on the input;
- outside MAE: mean absolute pixel difference (0-255) to the input outside the edited region (the object's
  silhouette before and after, dilated 2 px), for colour, object and position edits; time and ground edits
  change every pixel, so only the evaluator judges them;
- seconds per edit at batch 1 (2 threads).

Against: img2img with the bundled `tiny` at its defaults and the instruction as prompt (several strengths, so
the two can be compared at equal preservation), and the unedited input. tiny-edit runs in plain diffusers
(StableDiffusionInstructPix2PixPipeline) at its shipped defaults (diffcli.json), which is what `diffcli edit`
computes (tests/bundled/test_tiny_edit.py); img2img through diffcli's pipeline layer as bench/bundled_edits.py.

    python bench/edit_quality.py [-n 40] [--strengths 0.3,0.5,0.7] [--model diffcli/bundled/tiny-edit]
        [--cfg X --image-cfg Y --steps S]   # other settings than the shipped ones
        [--phrasings train]                 # the trained phrasings instead of the held-out ones
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from diffcli import guidance
from diffcli.bundled import model_dir, scenes
from diffcli.bundled.evaluator import load_evaluator
from diffcli.training.edit import EDIT_ATTRS, edit_pair, instruction

PIXEL_ATTRS = ("color", "obj", "position")


def make_cases(n: int, seed: int, held_out: bool):
    rng = random.Random(seed)
    cases = []
    for attr in EDIT_ATTRS:
        for _ in range(n):
            src, dst, a, new = edit_pair(rng, attr)
            cases.append(
                {
                    "src": src,
                    "dst": dst,
                    "attr": a,
                    "new": new,
                    "text": instruction(a, new, src, rng, held_out=held_out),
                    "seed": rng.randrange(2**31),
                }
            )
    return cases


def outside_mask(src, dst) -> np.ndarray:
    """1 where neither the input's nor the edited object is (dilated 2 px), else 0."""
    from scipy.ndimage import binary_dilation

    m = np.maximum(scenes.object_mask(src, 64), scenes.object_mask(dst, 64)) > 0.01
    if src.obj == "lighthouse" or dst.obj == "lighthouse":  # its night beam is light in the sky, drawn beside it
        m |= _beam(src) | _beam(dst)
    return ~binary_dilation(m, iterations=2)


def _beam(s) -> np.ndarray:
    if s.obj != "lighthouse" or s.time != "night":
        return np.zeros((64, 64), bool)
    a = np.asarray(scenes.render(s, 64)).astype(int)
    b = np.asarray(scenes.render(_with(s, time="night", obj="mountain", color=s.color), 64)).astype(int)
    return np.abs(a - b).max(axis=2) > 8


def _with(s, **kw):
    from dataclasses import replace

    return replace(s, **kw)


def score(ev, cases, inputs, outputs) -> dict:
    pin, pout = ev.predict(inputs), ev.predict(outputs)
    per = {a: {"success": [], "preservation": [], "mae": []} for a in EDIT_ATTRS}
    for c, x, y, pi, po in zip(cases, inputs, outputs, pin, pout):
        a = c["attr"]
        per[a]["success"].append(po[a] == c["new"])
        per[a]["preservation"].append(all(po[b] == pi[b] for b in EDIT_ATTRS if b != a))
        if a in PIXEL_ATTRS:
            keep = outside_mask(c["src"], c["dst"])
            d = np.abs(np.asarray(y, np.float32) - np.asarray(x, np.float32)).mean(axis=2)
            per[a]["mae"].append(float(d[keep].mean()))
    out = {
        "success": float(np.mean([v for a in per for v in per[a]["success"]])),
        "preservation": float(np.mean([v for a in per for v in per[a]["preservation"]])),
        "outside_mae": float(np.mean([v for a in PIXEL_ATTRS for v in per[a]["mae"]])),
        "per_attr": {
            a: {
                "success": float(np.mean(per[a]["success"])),
                "preservation": float(np.mean(per[a]["preservation"])),
                **({"outside_mae": float(np.mean(per[a]["mae"]))} if per[a]["mae"] else {}),
            }
            for a in EDIT_ATTRS
        },
    }
    return out


def run_edit(pipe, cases, inputs, rec, batch=50):
    out = []
    for i in range(0, len(cases), batch):
        cs = cases[i : i + batch]
        out += pipe(
            [c["text"] for c in cs],
            image=inputs[i : i + batch],
            num_inference_steps=rec["steps"],
            guidance_scale=rec["cfg"],
            image_guidance_scale=rec["image_cfg"],
            generator=[torch.Generator("cpu").manual_seed(c["seed"]) for c in cs],
        ).images
    return out


def run_img2img(pipe, cases, inputs, rec, strength, batch=50):
    out = []
    for i in range(0, len(cases), batch):
        cs = cases[i : i + batch]
        out += pipe(
            [c["text"] for c in cs],
            image=inputs[i : i + batch],
            strength=strength,
            num_inference_steps=rec["steps"],
            generator=[torch.Generator("cpu").manual_seed(c["seed"]) for c in cs],
            **guidance.pipeline_kwargs(pipe, rec["cfg"], rec.get("cfg_cutoff"), rec["steps"], strength),
        ).images
    return out


def per_edit_seconds(fn, n: int = 6) -> float:
    fn(0)  # warm
    t = time.perf_counter()
    for i in range(1, n + 1):
        fn(i)
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=40, help="edits per attribute")
    ap.add_argument("--seed", type=int, default=28_000_028, help="scene seed (the recipe's is 0)")
    ap.add_argument("--model", default=str(model_dir("tiny-edit")))
    ap.add_argument("--strengths", default="0.3,0.5,0.7", help="img2img strengths (baseline)")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--cfg", type=float)
    ap.add_argument("--image-cfg", type=float)
    ap.add_argument("--phrasings", choices=["held-out", "train"], default="held-out")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from diffusers import StableDiffusionInstructPix2PixPipeline
    from diffusers.utils import logging as dlog

    dlog.disable_progress_bar()
    ev = load_evaluator()
    cases = make_cases(args.n, args.seed, held_out=args.phrasings == "held-out")
    inputs = [scenes.render(c["src"], 64) for c in cases]
    targets = [scenes.render(c["dst"], 64) for c in cases]
    rows = {}

    rec = json.loads((Path(args.model) / "diffcli.json").read_text())
    rec.update({k: v for k, v in {"steps": args.steps, "cfg": args.cfg, "image_cfg": args.image_cfg}.items() if v})
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    t = time.perf_counter()
    edited = run_edit(pipe, cases, inputs, rec)
    name = f"tiny-edit (steps {rec['steps']}, cfg {rec['cfg']}, image cfg {rec['image_cfg']})"
    rows[name] = score(ev, cases, inputs, edited) | {"batch_s": (time.perf_counter() - t) / len(cases)}
    rows[name]["s_per_edit"] = per_edit_seconds(lambda i: run_edit(pipe, cases[i : i + 1], inputs[i : i + 1], rec))

    if not args.no_baselines:
        from diffcli.device import choose
        from diffcli.models import resolve
        from diffcli.models.layout import read_layout
        from diffcli.pipelines import load_base, set_scheduler, task_pipeline

        ref = resolve("tiny", offline=True)
        trec = read_layout(ref.path).recommended()
        i2i = task_pipeline(load_base(ref, choose("cpu", "float32")), "img2img")
        set_scheduler(i2i, trec["scheduler"])
        i2i.set_progress_bar_config(disable=True)
        for s in [float(x) for x in args.strengths.split(",")]:
            out = run_img2img(i2i, cases, inputs, trec, s)
            key = f"img2img tiny, strength {s}"
            rows[key] = score(ev, cases, inputs, out)
            rows[key]["s_per_edit"] = per_edit_seconds(
                lambda i, s=s: run_img2img(i2i, cases[i : i + 1], inputs[i : i + 1], trec, s)
            )
        rows["unedited input"] = score(ev, cases, inputs, inputs) | {"s_per_edit": 0.0}
        rows["true edit (render)"] = score(ev, cases, inputs, targets) | {"s_per_edit": 0.0}

    print(
        f"\n{len(cases)} edits ({args.n} per attribute), {args.phrasings} phrasings, scene seed {args.seed}, "
        f"{torch.get_num_threads()} threads\n"
    )
    print(f"| {'method':<52} | success | preservation | outside MAE | s / edit |")
    print(f"|{'-' * 54}|---------|--------------|-------------|----------|")
    for k, r in rows.items():
        print(
            f"| {k:<52} | {r['success']:7.3f} | {r['preservation']:12.3f} | {r['outside_mae']:11.2f} "
            f"| {r['s_per_edit']:8.3f} |"
        )
    print("\nper attribute (success / preservation / outside MAE):")
    for k, r in rows.items():
        cells = "  ".join(
            f"{a} {v['success']:.2f}/{v['preservation']:.2f}"
            + (f"/{v['outside_mae']:.1f}" if "outside_mae" in v else "")
            for a, v in r["per_attr"].items()
        )
        print(f"  {k}: {cells}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

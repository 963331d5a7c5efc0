"""What step caching (`--cache`, diffcli.cache) costs on the bundled models, and what it saves.

    python bench/cache_quality.py [--model tiny] [--n 200] [--seeds 1] [--specs deepcache:2,deepcache:3]
        [--timing 12] [--json FILE]
    python bench/cache_quality.py --model tiny-flux --specs fbc:0.05,fbc:0.1,taylorseer:3,magcache:0.06 ...
        [--steps 12] [--cfg 3]   (other than the model's defaults: for a candidate new default)

A bundled model at its own defaults (steps, cfg, cfg-cutoff, sampler, negative prompt and call arguments from
its diffcli.json and family): `tiny` (a UNet: DeepCache) or `tiny-flux` (a FLUX.1-architecture transformer:
diffusers' first-block cache, TaylorSeer and MagCache hooks), on N held-out scenes
(bundled_quality.heldout_prompts, the seed training never used), each prompt with the same seed uncached and
with each cache setting. Prints, per setting: adherence and Fréchet distance (the scene evaluator, as
bench/bundled_quality.py scores them) and their ratios to the uncached run, the mean absolute pixel difference to
the uncached images (0-255), and the wall time of the denoising loop relative to uncached (batch 1, latents out
so the VAE decode is not counted; the runs of all settings interleaved, the median of --timing calls each).
Bars (issues 20 and 29): adherence ratio >= 0.97, FD ratio <= 1.15 (and, for the defaults, a loop speed-up
>= 1.5x).
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

from diffcli import families, guidance  # noqa: E402
from diffcli.bundled import model_dir  # noqa: E402
from diffcli.bundled.evaluator import load_evaluator  # noqa: E402
from diffcli.cache import active, parse  # noqa: E402

from bundled_quality import generate, heldout_prompts  # noqa: E402

BARS = {"adherence_ratio": 0.97, "fd_ratio": 1.15}
DEFAULT_SPECS = {"tiny": "deepcache:2,deepcache:3,deepcache:4", "tiny-flux": "fbc,taylorseer,magcache"}


class Cached:
    """PIPE called as diffcli's engine calls it: the step cache SPEC on for each call (STEPS steps), the
    family's call arguments, its default negative prompt (one per prompt) and the model's size."""

    def __init__(self, pipe, spec: str, steps: int, own: dict) -> None:
        self.pipe, self.spec, self.steps = pipe, spec, steps
        family = families.family_of_pipe(pipe)
        self.extra = {**family.call_kwargs, "height": own["height"], "width": own["width"]}
        self.negative = own.get("negative")

    def __call__(self, prompt, **kwargs):
        # the guidance keyword was looked up on this wrapper, which is no pipeline: the family's own (tiny-flux:
        # true_cfg_scale)
        if "guidance_scale" in kwargs:
            kwargs[guidance.cfg_argument(self.pipe)] = kwargs.pop("guidance_scale")
        if self.negative:
            kwargs["negative_prompt"] = [self.negative] * (len(prompt) if isinstance(prompt, list) else 1)
        with active(self.pipe, self.spec, self.steps):
            return self.pipe(prompt, **self.extra, **kwargs)

    @property
    def denoiser(self):
        return getattr(self.pipe, "unet", None) or self.pipe.transformer

    def __getattr__(self, name):
        return getattr(self.pipe, name)


def load(name: str, scheduler: str):
    import diffusers

    from diffcli.schedulers import build

    pipe = diffusers.DiffusionPipeline.from_pretrained(str(model_dir(name)), torch_dtype=torch.float32)
    pipe.scheduler = build(scheduler, dict(pipe.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def loop_seconds(pipes: dict, steps: int, cfg: float, cutoff: float, calls: int) -> tuple[dict, dict]:
    """Per setting: the median seconds of the denoising loop of one batch-1 call (from the denoiser's first
    call to the end of the call, latents out: text encoding and VAE decode not counted), the settings
    interleaved; and, for a transformer, the share of its calls that ran its last block (the rest were served
    from the cache: what a real-size model saves, bench/flux_cache_real_size.py)."""
    denoiser = next(iter(pipes.values())).denoiser
    times, ran = {spec: [] for spec in pipes}, {spec: [0, 0] for spec in pipes}
    first: list[float] = []
    counter = [0, 0]  # denoiser calls, calls that ran the last block

    def called(*_):  # a forward pre-hook: returns None, so the call's arguments stay as they are
        first.append(time.perf_counter())
        counter[0] += 1

    def tail_ran(*_):
        counter[1] += 1

    hooks = [denoiser.register_forward_pre_hook(called)]
    tail = _tail_module(denoiser)
    if tail is not None:
        hooks.append(tail.register_forward_pre_hook(tail_ran))
    try:
        for i in range(calls + 1):
            for spec, pipe in pipes.items():
                first.clear()
                counter[:] = [0, 0]
                pipe(
                    ["red house on the left, snowy ground, at night"],
                    num_inference_steps=steps,
                    output_type="latent",
                    generator=torch.Generator().manual_seed(i),
                    **guidance.pipeline_kwargs(pipe, cfg, cutoff, steps),
                )
                if i:  # the first round warms up
                    times[spec].append(time.perf_counter() - first[0])
                    ran[spec] = [ran[spec][0] + counter[0], ran[spec][1] + counter[1]]
    finally:
        for h in hooks:
            h.remove()
    full = {spec: round(r[1] / r[0], 4) for spec, r in ran.items() if tail is not None and r[0]}
    return {spec: statistics.median(ts) for spec, ts in times.items()}, full


def _tail_module(denoiser):
    """A module inside a transformer's last block: it runs only when the cache lets that block run."""
    blocks = getattr(denoiser, "single_transformer_blocks", None) or getattr(denoiser, "transformer_blocks", None)
    return None if not blocks else blocks[-1].proj_out if hasattr(blocks[-1], "proj_out") else blocks[-1].attn


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="held-out scenes")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--model", default="tiny", help="a bundled model: tiny (UNet) or tiny-flux (transformer)")
    ap.add_argument("--specs", default=None, help="cache settings, comma-separated (default: per model)")
    ap.add_argument("--timing", type=int, default=12, help="timed calls per setting (0: no timing)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--steps", type=int, default=None, help="steps (default: the model's)")
    ap.add_argument("--cfg", type=float, default=None, help="cfg (default: the model's)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    d = json.loads((model_dir(a.model) / "diffcli.json").read_text())
    steps, cfg, cutoff = a.steps or d["steps"], d["cfg"] if a.cfg is None else a.cfg, d.get("cfg_cutoff", 0.0)
    base = load(a.model, d["scheduler"])
    specs = ["none"] + (a.specs or DEFAULT_SPECS[a.model]).split(",")
    for spec in specs:
        parse(spec)  # a bad one fails here, not after the first runs
    pipes = {spec: Cached(base, spec, steps, d) for spec in specs}
    ev = load_evaluator()
    prompts = heldout_prompts(a.n)
    out = {
        "model": a.model,
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
        for spec in specs if a.n else ():  # --n 0: the loop timing only
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
            secs, full = loop_seconds(pipes, steps, cfg, cutoff, a.timing)
            for spec, s in secs.items():
                out["settings"].setdefault(spec, {})["loop_seconds"] = round(s, 4)
                out["settings"][spec]["loop_time_ratio"] = round(s / secs["none"], 3)
                out["settings"][spec]["loop_speedup"] = round(secs["none"] / s, 2)
                if spec in full:
                    out["settings"][spec]["full_calls"] = full[spec]
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()

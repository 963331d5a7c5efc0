"""MagCache's magnitude ratios for a bundled transformer model (the per-step ratio of the transformer's residual
norms that `--cache magcache` needs; diffusers ships them for FLUX.1 only).

    python bench/mag_ratios.py [--model tiny-flux] [--n 16] [--steps 20]

Runs diffusers' MagCache in calibration mode (MagCacheConfig(calibrate=True): nothing is skipped) on N held-out
prompts at the model's own settings (its diffcli.json: cfg, negative prompt, size, call arguments; both passes of
true classifier-free guidance are calibrated) and prints the mean ratio per step, rounded: the tuple to put in
the family's `mag_ratios` (diffcli/families/bundled.py).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from cache_quality import Cached, load  # noqa: E402

from diffcli import guidance  # noqa: E402
from diffcli.bundled import model_dir  # noqa: E402

from bundled_quality import heldout_prompts  # noqa: E402


def calibrate(pipe, prompts, steps: int, cfg: float, own: dict) -> list[float]:
    """The mean, over PROMPTS and guidance passes, of the ratios diffusers' calibration prints per step."""
    from diffusers.hooks import MagCacheConfig

    runs = []
    call = Cached(pipe, "none", steps, own)
    guided = guidance.pipeline_kwargs(pipe, cfg, 0.0, steps)
    for i, prompt in enumerate(prompts):
        pipe.transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=steps))
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                gen = torch.Generator().manual_seed(i)
                call([prompt], num_inference_steps=steps, output_type="latent", generator=gen, **guided)
        finally:
            pipe.transformer.disable_cache()
        lines = [x for x in printed.getvalue().splitlines() if x.startswith("[") and not x.startswith("[MagCache]")]
        runs += [ast.literal_eval(x) for x in lines]
    return [round(float(r), 5) for r in np.mean(np.array(runs), axis=0)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-flux")
    ap.add_argument("--n", type=int, default=16, help="held-out prompts")
    ap.add_argument("--steps", type=int, default=None, help="default: the model's own")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    own = json.loads((model_dir(a.model) / "diffcli.json").read_text())
    steps = a.steps or own["steps"]
    with torch.no_grad():
        ratios = calibrate(load(a.model, own["scheduler"]), heldout_prompts(a.n, seed=4048), steps, own["cfg"], own)
    print(json.dumps({"model": a.model, "steps": steps, "prompts": a.n, "mag_ratios": ratios}))


if __name__ == "__main__":
    main()

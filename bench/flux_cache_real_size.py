"""The step caches' speed-up at real size on the FLUX.1 architecture, composed from short runs.

    python bench/flux_cache_real_size.py --cache-json FILE [--size 512] [--steps 28] [--threads 2]

A whole FLUX.1 [dev] transformer (19 double-stream and 38 single-stream blocks, 3072 wide: 12 B parameters)
does not fit this machine, and random weights would not say how often a cache skips. So the two are taken
apart, as bench/real_size.py composes runs too slow to repeat:

- cost: transformers of FLUX.1 [dev]'s configuration with random weights but 1-2 blocks of each kind, at
  SIZE x SIZE (SIZE/16 squared image tokens + 512 text tokens, batch 1: dev runs one pass per step), float32,
  best of 2 calls each: T(1,1), T(2,1), T(1,2) give a double block's cost, a single block's and everything else
  (embedders, RoPE, the output layers). A full step costs everything + 19 doubles + 38 singles; a step served
  from the cache costs everything else, plus the first double block for the first-block cache (it runs to
  decide), nothing of the blocks for TaylorSeer and MagCache (their predictions and sums are element-wise).
- how often each cache runs the whole transformer: `full_calls` of bench/cache_quality.py --model tiny-flux
  --json FILE (the trained bundled model, the same hooks; TaylorSeer's schedule is fixed by N and the step
  count, the others follow the model's own residuals).

Prints, per setting of FILE, the composed loop speed-up at real size: 1 / (f + (1 - f) x cached / full).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from real_size import cpu_kind  # noqa: E402

# FLUX.1 [dev]'s transformer/config.json (black-forest-labs/FLUX.1-dev), the block counts aside
FLUX_DEV = {
    "patch_size": 1,
    "in_channels": 64,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
BLOCKS = {"double": 19, "single": 38}
TEXT_TOKENS = 512


def seconds(doubles: int, singles: int, size: int) -> float:
    """The best of 2 calls (after one warm-up) of a FLUX.1 [dev] transformer with DOUBLES and SINGLES blocks."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(**FLUX_DEV, num_layers=doubles, num_single_layers=singles).eval()
    side = size // 16
    call = {
        "hidden_states": torch.randn(1, side * side, 64),
        "encoder_hidden_states": torch.randn(1, TEXT_TOKENS, 4096),
        "pooled_projections": torch.randn(1, 768),
        "timestep": torch.tensor([0.5]),
        "guidance": torch.tensor([3.5]),
        "img_ids": torch.zeros(side * side, 3),
        "txt_ids": torch.zeros(TEXT_TOKENS, 3),
        "return_dict": False,
    }
    times = []
    with torch.no_grad():
        for i in range(3):
            t = time.perf_counter()
            model(**call)
            if i:
                times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache-json", required=True, help="bench/cache_quality.py --model tiny-flux --json output")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    settings = json.loads(Path(a.cache_json).read_text())["settings"]
    t11, t21, t12 = seconds(1, 1, a.size), seconds(2, 1, a.size), seconds(1, 2, a.size)
    double, single = t21 - t11, t12 - t11
    rest = t11 - double - single
    full = rest + BLOCKS["double"] * double + BLOCKS["single"] * single
    cached = {"fbc": rest + double, "taylorseer": rest, "magcache": rest}
    out = {
        "cpu": cpu_kind(),
        "size": a.size,
        "seconds": {"double_block": round(double, 3), "single_block": round(single, 3), "rest": round(rest, 3)},
        "full_step_seconds": round(full, 2),
        "settings": {},
    }
    for spec, row in settings.items():
        kind = spec.split(":")[0]
        if kind not in cached or "full_calls" not in row:
            continue
        f = row["full_calls"]
        out["settings"][spec] = {
            "full_calls": f,
            "speedup_real_size": round(1 / (f + (1 - f) * cached[kind] / full), 2),
            "speedup_tiny_flux": row.get("loop_speedup"),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""What one cached UNet call costs against a full one (diffcli.cache.DeepCache), on the real-size architecture.

    python bench/cache_unet_cost.py [--branch layer|block] [--size 512] [--interval 3] [--steps 25]

An SD-1.5-architecture UNet2DConditionModel (860 M parameters, random weights: speed only, no
images), fp32 on the CPU, the CFG batch of 2 at SIZE² (SIZE/8 latents), 77 text tokens. Runs 2 ×
INTERVAL calls with the cache attached and prints each call's seconds, the mean cached/full ratio,
and the UNet-time ratio that gives at STEPS steps with deepcache:INTERVAL (ceil(STEPS/N) full calls).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402

from diffcli.cache import DeepCache  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--branch", choices=["layer", "block"], default="layer")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--interval", type=int, default=3)
    ap.add_argument("--steps", type=int, default=25)
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=a.size // 8).eval()
    x, text = torch.randn(2, 4, a.size // 8, a.size // 8), torch.randn(2, 77, 768)
    cache = DeepCache(unet, a.interval, a.branch)
    cache.attach()
    full, cached = [], []
    try:
        with torch.no_grad():
            for i in range(2 * a.interval):
                t = time.perf_counter()
                unet(x, 500 - i, encoder_hidden_states=text)
                (full if i % a.interval == 0 else cached).append(time.perf_counter() - t)
                print(
                    i,
                    "full" if i % a.interval == 0 else "cached",
                    round((full if i % a.interval == 0 else cached)[-1], 2),
                    flush=True,
                )
    finally:
        cache.detach()
    f, c = sum(full) / len(full), sum(cached) / len(cached)
    n_full = math.ceil(a.steps / a.interval)
    print(
        f"branch {a.branch}: full {f:.2f} s, cached {c:.2f} s, ratio {c / f:.3f}; {a.steps} steps deepcache:"
        f"{a.interval}: UNet time ratio {(n_full * f + (a.steps - n_full) * c) / (a.steps * f):.3f}"
    )


if __name__ == "__main__":
    main()

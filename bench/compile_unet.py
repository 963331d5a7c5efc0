"""Compiled execution at real size: the SD-1.5 UNet eager, with fused QKV, and torch.compile'd (inductor).

`diffcli batch/serve --compile` compiles the denoiser with `Module.compile()` (pipelines.compile_denoiser);
bench/compile.py measures that end to end on the bundled model. This measures what it does to one guided
UNet step of the real-size SD-1.5 architecture (the random-weight model bench/real_size.py builds) on
this machine, in one process: eager float32 (diffcli's CPU default), eager with diffusers'
`fuse_qkv_projections()` (one matmul for q, k and v), and inductor-compiled (the compile cost printed,
with the first call). Modes are timed alternately (A B C A B C ...), so a drifting machine load hits
all alike; printed per mode: each call, the best and the median, their ratios to eager, and the
largest difference of the noise prediction from eager's (relative L2).

    python bench/compile_unet.py [--model /tmp/diffcli-real-size/sd15] [--repeats 5] [--latent 64]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--model", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "diffcli-real-size" / "sd15"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latent", type=int, default=64, help="latent side (64: a 512x512 image)")
    args = parser.parse_args()
    from diffusers import UNet2DConditionModel

    eager = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet", torch_dtype=torch.float32).eval()
    fused = copy.deepcopy(eager)
    fused.fuse_qkv_projections()
    compiled = copy.deepcopy(eager)
    compiled.compile()
    torch.manual_seed(0)
    inputs = (
        torch.randn(2, 4, args.latent, args.latent),
        torch.tensor([500, 500]),
        torch.randn(2, 77, eager.config.cross_attention_dim),
    )
    modes = {"eager": eager, "fused-qkv": fused, "compiled": compiled}

    def call(model):
        with torch.inference_mode():
            return model(*inputs, return_dict=False)[0]

    outputs, first = {}, {}
    for name, model in modes.items():  # the first call: warm-up, and for `compiled` the compile
        t0 = time.perf_counter()
        outputs[name] = call(model)
        first[name] = time.perf_counter() - t0
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); latent {args.latent}x{args.latent}, "
        f"CFG batch 2; first call (compile included for `compiled`): "
        + ", ".join(f"{n} {s:.1f} s" for n, s in first.items()),
        flush=True,
    )
    times = {name: [] for name in modes}
    for _ in range(args.repeats):
        for name, model in modes.items():
            t0 = time.perf_counter()
            call(model)
            times[name].append(time.perf_counter() - t0)
    base_best, base_median = min(times["eager"]), statistics.median(times["eager"])
    for name, values in times.items():
        best, median = min(values), statistics.median(values)
        rel = ((outputs[name] - outputs["eager"]).norm() / outputs["eager"].norm()).item()
        print(
            f"{name:10s} per guided step: best {best:.2f} s (eager/this {base_best / best:.2f}x), median "
            f"{median:.2f} s ({base_median / median:.2f}x); all {[round(v, 2) for v in values]}; "
            f"relative L2 vs eager {rel:.1e}",
            flush=True,
        )
    saved = base_median - statistics.median(times["compiled"])
    cost = first["compiled"] - base_median
    print(
        f"compile cost ~{cost:.0f} s; break-even after {cost / saved:.0f} steps"
        if saved > 0
        else f"compile cost ~{cost:.0f} s; compiled is not faster per step"
    )


if __name__ == "__main__":
    main()

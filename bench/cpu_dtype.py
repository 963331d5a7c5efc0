"""CPU dtype: time per UNet step and output difference, float32 vs bfloat16, same process.

An SD-1.5-sized UNet2DConditionModel (diffusers' default config, random weights) at a 64x64 latent
(512x512 image), batch 2 as with classifier-free guidance. Then the same comparison end to end on a
diffcli model: the mean absolute pixel difference between float32 and bfloat16 images.

    python bench/cpu_dtype.py [--latent 64] [--steps 3] [--model tiny]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def unet_step_times(latent: int, steps: int) -> None:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=64).eval()  # SD 1.x shape, 860 M parameters
    sample = torch.randn(2, 4, latent, latent)
    text = torch.randn(2, 77, 768)
    t = torch.tensor([500, 500])
    results = {}
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16):
            unet.to(dtype)
            args = (sample.to(dtype), t, text.to(dtype))
            unet(*args)  # warm-up
            times = []
            for _ in range(steps):
                t0 = time.perf_counter()
                out = unet(*args).sample
                times.append(time.perf_counter() - t0)
            results[dtype] = (min(times), out.float())
    f32, bf16 = results[torch.float32], results[torch.bfloat16]
    rel = ((f32[1] - bf16[1]).norm() / f32[1].norm()).item()
    print(
        f"SD1.5 UNet, latent {latent}x{latent}, batch 2: float32 {f32[0]:.2f} s/step, bfloat16 {bf16[0]:.2f} s/step, "
        f"speed-up x{f32[0] / bf16[0]:.2f}; relative L2 difference of the noise prediction {rel:.4f}"
    )


def image_difference(model: str, n: int) -> None:
    from diffcli.device import DeviceChoice
    from diffcli.models import resolve
    from diffcli.models.layout import read_layout
    from diffcli.pipelines import load_base, set_scheduler, task_pipeline

    ref = resolve(model, offline=True)
    rec = read_layout(ref.path).recommended()
    images, times = {}, {}
    for dtype in ("float32", "bfloat16"):
        pipe = task_pipeline(load_base(ref, DeviceChoice("cpu", dtype, "bench")), "txt2img")
        set_scheduler(pipe, rec["scheduler"])
        out = []
        t0 = time.perf_counter()
        for seed in range(n):
            img = pipe(
                "castle at dusk",
                num_inference_steps=rec["steps"],
                guidance_scale=rec["cfg"],
                generator=torch.Generator("cpu").manual_seed(seed),
            ).images[0]
            out.append(np.asarray(img, dtype=np.float64))
        times[dtype] = (time.perf_counter() - t0) / n
        images[dtype] = out
    diff = np.mean([np.abs(a - b).mean() for a, b in zip(images["float32"], images["bfloat16"])])
    print(
        f"{model}: float32 {times['float32']:.3f} s/image, bfloat16 {times['bfloat16']:.3f} s/image "
        f"(x{times['float32'] / times['bfloat16']:.2f}); mean |pixel difference| {diff:.2f} / 255 over {n} images"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--latent", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--model", default=None, help="also compare whole images made with this model")
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, capability "
        f"{torch.backends.cpu.get_cpu_capability()}"
    )
    unet_step_times(args.latent, args.steps)
    if args.model:
        image_difference(args.model, args.images)

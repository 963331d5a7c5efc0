"""Real-size speed: Stable Diffusion 1.5 and SDXL architectures, plain diffusers vs diffcli.

The models have random weights, built here from the official configurations (SD 1.5: a 860 M
parameter UNet, the 123 M CLIP ViT-L/14 text encoder and the 84 M VAE; SDXL: the 2.6 B UNet and both
text encoders) and saved once in the diffusers layout under --models (float16 safetensors, ~2 GB for
SD 1.5, ~7 GB for SDXL). Random weights cost exactly what trained ones cost; the pixels mean nothing,
but differences between runs of the same seed still show what an option changes.

Each run is its own process, one after another (never two at once), so each has its own peak RSS and
no run warms another's caches:
  plain-fp32   a plain diffusers script: AutoPipelineForText2Image.from_pretrained(float32), pipe(...)
  plain-bf16   the same in bfloat16 (plain-fp16: float16, for GPUs)
  diffcli      `diffcli txt2img PROMPT -m MODEL --steps S --cfg 7.5 -W N -H N --seed 1` (its defaults)
  cache        the same with `--cache deepcache` (step caching)
  more with --extra NAME="diffcli options", e.g. --extra vae-tiling="--vae-tiling"

Per run: start (process start to the first text-encoder call: imports and loading), text encode,
per guided UNet step (the denoising loop's time / steps, CFG batch of 2), VAE decode, end to end (the
whole process, as a user waits for it), and peak RSS. Runs named in --short run --short-steps steps
and their end to end is composed from the measured parts (start + text + steps x per step + decode
+ the rest), marked `~`; use it for runs too slow to repeat in full. Ratios are against plain-fp32
and plain-bf16 of the same invocation. The mean absolute difference of each image to plain-fp32's
and to diffcli's (0-255 levels) is printed too.

    python bench/real_size.py [--arch sd15|sdxl] [--size 512] [--steps 25]
        [--runs plain-fp32,plain-bf16,diffcli,cache] [--short plain-bf16 --short-steps 3] [--timeout S]
        [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

START = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
PROMPT = "castle at dusk, detailed oil painting"
CFG = 7.5
BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}

CLIP_L = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
CLIP_BIGG = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}
VAE = {
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4,
    "layers_per_block": 2,
}
UNETS = {
    "sd15": {
        "block_out_channels": [320, 640, 1280, 1280],
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "layers_per_block": 2,
        "sample_size": 64,
    },
    "sdxl": {
        "block_out_channels": [320, 640, 1280],
        "cross_attention_dim": 2048,
        "attention_head_dim": [5, 10, 20],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "transformer_layers_per_block": [1, 2, 10],
        "use_linear_projection": True,
        "layers_per_block": 2,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,
        "sample_size": 128,
    },
}
RUNS = {
    "plain-fp32": ("plain", "float32"),
    "plain-bf16": ("plain", "bfloat16"),
    "plain-fp16": ("plain", "float16"),
    "diffcli": ("diffcli", ""),
    "cache": ("diffcli", "--cache deepcache"),
}


def build(arch: str, where: Path) -> Path:
    """The ARCH pipeline with random weights, saved in the diffusers layout (once)."""
    if (where / "model_index.json").exists():
        return where
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(ROOT / "diffcli" / "bundled" / "tiny" / "tokenizer", model_max_length=77)
    unet = UNet2DConditionModel(**UNETS[arch])
    text = CLIPTextModel(CLIPTextConfig(**CLIP_L))
    if arch == "sd15":
        vae = AutoencoderKL(**VAE, sample_size=512)
        scheduler = PNDMScheduler(**BETAS, skip_prk_steps=True, set_alpha_to_one=False)
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    else:
        vae = AutoencoderKL(**VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
        scheduler = EulerDiscreteScheduler(**BETAS, timestep_spacing="leading")
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text,
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG)),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=scheduler,
        )
    pipe.to(torch.float16).save_pretrained(where, safe_serialization=True)
    return where


# ---- inside one run's process -------------------------------------------------------------------


def instrument(marks: dict) -> None:
    """Time the text encoders, the UNet and the VAE decoder by wrapping their classes' entry points."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    def timed(cls, name, key):
        original = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            t0 = time.perf_counter()
            result = original(self, *args, **kwargs)
            marks.setdefault(key, []).append((t0, time.perf_counter()))
            return result

        setattr(cls, name, wrapper)

    timed(CLIPTextModel, "__call__", "text")
    timed(CLIPTextModelWithProjection, "__call__", "text")
    timed(UNet2DConditionModel, "__call__", "unet")
    timed(AutoencoderKL, "decode", "decode")


def child(run: str, model: Path, size: int, steps: int, out: Path, extra: str, device: str) -> None:
    marks: dict = {}
    kind, arg = RUNS.get(run, ("diffcli", extra))
    instrument(marks)
    image_path = out / f"{run}.png"
    if kind == "plain":
        import torch
        from diffusers import AutoPipelineForText2Image

        pipe = AutoPipelineForText2Image.from_pretrained(str(model), torch_dtype=getattr(torch, arg)).to(device)
        image = pipe(
            PROMPT,
            num_inference_steps=steps,
            guidance_scale=CFG,
            height=size,
            width=size,
            generator=torch.Generator("cpu").manual_seed(1),
        ).images[0]
        image.save(image_path)
    else:
        from diffcli.cli.app import main

        folder = out / f"{run}-out"
        argv = [
            "txt2img",
            PROMPT,
            "-m",
            str(model),
            "--steps",
            str(steps),
            "--cfg",
            str(CFG),
            "-W",
            str(size),
            "-H",
            str(size),
            "--seed",
            "1",
            "-o",
            str(folder),
            "-q",
            "--no-server",
            "--device",
            device,
            *arg.split(),
        ]
        sys.argv = ["diffcli", *argv]
        try:
            main()
        except SystemExit as exc:
            if exc.code:
                raise
        os.replace(next(folder.glob("*.png")), image_path)
    end = time.perf_counter()
    text, unet, decode = marks["text"], marks["unet"], marks["decode"]
    figures = {
        "start": text[0][0] - START,
        "text": sum(b - a for a, b in text),
        "loop": decode[0][0] - unet[0][0],
        "unet_calls": len(unet),
        "decode": sum(b - a for a, b in decode),
        "end_to_end": end - START,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_gpu_gib": _peak_gpu_gib(device),
        "steps": steps,
    }
    figures["step"] = figures["loop"] / steps
    print("FIGURES " + json.dumps(figures), flush=True)


def _peak_gpu_gib(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**30


# ---- the parent ----------------------------------------------------------------------------------


def mean_difference(a: Path, b: Path) -> float:
    import numpy as np
    from PIL import Image

    x, y = (np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) for p in (a, b))
    return float(np.abs(x - y).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", choices=sorted(UNETS), default="sd15")
    parser.add_argument("--size", type=int, default=None, help="image side (default 512; SDXL 768)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--runs", default="plain-fp32,plain-bf16,diffcli,cache")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=OPTIONS")
    parser.add_argument("--short", default="", help="runs to time with --short-steps steps (comma-separated)")
    parser.add_argument("--short-steps", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (both plain and diffcli runs)")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds one run may take (a slower one is left out)"
    )
    parser.add_argument("--models", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "diffcli-real-size")
    parser.add_argument("--out", type=Path, default=None, help="where the images go (default: under --models)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--extra-options", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = args.size or (512 if args.arch == "sd15" else 768)
    if args.child:
        child(args.child, args.model, size, args.steps, args.out, args.extra_options, args.device)
        return

    model = build(args.arch, args.models / args.arch)
    out = args.out or args.models / f"out-{args.arch}-{size}"
    out.mkdir(parents=True, exist_ok=True)
    extras = dict(item.split("=", 1) for item in args.extra)
    names = [n for n in args.runs.split(",") if n] + list(extras)
    short = {n for n in args.short.split(",") if n}
    results = {}
    for name in names:
        steps = args.short_steps if name in short else args.steps
        command = [
            sys.executable,
            __file__,
            "--child",
            name,
            "--model",
            str(model),
            "--arch",
            args.arch,
            "--size",
            str(size),
            "--steps",
            str(steps),
            "--out",
            str(out),
            "--extra-options",
            extras.get(name, ""),
            "--device",
            args.device,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"{name}: did not finish in {args.timeout:.0f} s (--timeout); left out", file=sys.stderr, flush=True)
            results[name] = {"timed_out": args.timeout, "steps": steps}
            continue
        line = next((x for x in done.stdout.splitlines() if x.startswith("FIGURES ")), None)
        if done.returncode or line is None:
            print(f"{name}: failed (exit {done.returncode})\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        figures = json.loads(line[len("FIGURES ") :])
        if name in short:  # compose the full-length figure from the measured parts
            rest = figures["end_to_end"] - figures["start"] - figures["text"] - figures["loop"] - figures["decode"]
            figures["end_to_end"] = (
                figures["start"] + figures["text"] + args.steps * figures["step"] + figures["decode"] + rest
            )
            figures["composed"] = True
        results[name] = figures
        print(f"{name:12s} done: end to end {figures['end_to_end']:.1f} s", file=sys.stderr, flush=True)
    report(args, size, results, out)


def _ratio(e2e: float, base: dict | None) -> str:
    if not base:
        return "-"
    if "timed_out" in base:  # the baseline took longer than its time limit: the ratio is at most this
        return f"<{e2e / base['timed_out']:.2f}x"
    return f"{e2e / base['end_to_end']:.2f}x"


def cpu_kind() -> str:
    """The CPU's model name and the bfloat16/AMX/AVX flags it has (docs/benchmarks.md keeps a table per kind),
    and what diffcli takes it for (DIFFCLI_CPU_BF16 may force that answer)."""
    from diffcli.device import cpu_has_native_bf16

    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")
    shown = " ".join(f for f in wanted if f in flags) or "none of the AVX512/AMX flags"
    native = "native bfloat16" if cpu_has_native_bf16() else "no native bfloat16"
    return f"CPU {model} [{shown}]; diffcli: {native}"


def report(args, size: int, results: dict, out: Path) -> None:
    import torch

    print(
        f"{args.arch} architecture, {size}x{size}, {args.steps} steps, CFG {CFG} (batch 2 per step); device "
        f"{args.device}; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
    )
    print(cpu_kind())
    print(
        f"{'run':14s} {'start s':>8s} {'text s':>7s} {'UNet calls':>10s} {'step s':>7s} {'decode s':>9s} "
        f"{'end to end s':>13s} "
        f"{'peak RSS GiB':>13s} {'vs fp32':>8s} {'vs bf16':>8s} {'diff fp32':>10s} {'diff diffcli':>13s}"
    )
    for name, f in results.items():
        if "timed_out" in f:
            print(
                f"{name:14s} did not finish {f['steps']} steps in {f['timed_out']:.0f} s: end to end > "
                f"{f['timed_out']:.0f} s"
            )
            continue
        e2e = f["end_to_end"]
        ratio = {base: _ratio(e2e, results.get(base)) for base in ("plain-fp32", "plain-bf16")}
        diffs = {
            base: (
                f"{mean_difference(out / f'{name}.png', out / f'{base}.png'):.2f}"
                if "end_to_end" in results.get(base, {}) and base != name
                else "-"
            )
            for base in ("plain-fp32", "diffcli")
        }
        mark = "~" if f.get("composed") else " "
        print(
            f"{name:14s} {f['start']:8.1f} {f['text']:7.2f} {f['unet_calls']:10d} {f['step']:7.2f} "
            f"{f['decode']:9.1f} {mark}{e2e:12.1f} "
            f"{f['peak_rss_gib']:13.2f} {ratio['plain-fp32']:>8s} {ratio['plain-bf16']:>8s} "
            f"{diffs['plain-fp32']:>10s} {diffs['diffcli']:>13s}"
        )
    gpu = {name: f["peak_gpu_gib"] for name, f in results.items() if f.get("peak_gpu_gib") is not None}
    if gpu:
        print("peak GPU memory (GiB): " + ", ".join(f"{name} {value:.2f}" for name, value in gpu.items()))
    print(
        "~: composed from measured parts (--short); <: against a run stopped at --timeout; diff: mean absolute "
        "difference of the images, 0-255 levels"
    )


if __name__ == "__main__":
    main()

"""Peak memory of `diffcli upscale` vs image size: 512->2048 and 1024->4096 (x4), lanczos and tiled.

Each run is a fresh `python -m diffcli upscale ...` subprocess; its peak RSS is read with
resource.getrusage(RUSAGE_CHILDREN) in a one-shot wrapper process, so runs do not mask each other.
The tiled runs use a micro random-weight SD model built here (VAE 8/16 channels, UNet 16/32, no
attention layers), so the figure is the engine's memory (tiles, blending, output) plus the fixed cost of
torch/diffusers, not a big model's weights or attention maps.

    python bench/upscale_memory.py [--tile-size 256] [--threads 1] [--sizes 512,1024]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

WRAPPER = (
    "import resource, subprocess, sys, json, time;"
    "t = time.perf_counter(); p = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
    "print(json.dumps({'rc': p.returncode, 'err': p.stderr[-400:], 'out': p.stdout.strip(),"
    "'wall_s': time.perf_counter() - t, 'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))"
)


def build_micro_sd(path: Path) -> Path:
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from tiny_models import _rmtree, _text_config, build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer(path / "_tok")
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        mid_block_type=None,
        cross_attention_dim=32,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=8,
        sample_size=32,
        layers_per_block=1,
        mid_block_add_attention=False,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        unet=unet,
        text_encoder=CLIPTextModel(_text_config(tok)),
        tokenizer=tok,
        scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    _rmtree(path / "_tok")
    return path


def make_input(path: Path, size: int) -> Path:

    from diffcli.bundled.scenes import render, sample_scene

    render(sample_scene(7), size).save(path)
    return path


def measure_cmd(argv: list[str], env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, env=env, cwd=ROOT)
    return json.loads(out.stdout)


def measure(args: list[str], env: dict) -> dict:
    return measure_cmd([sys.executable, "-m", "diffcli", "upscale", *args], env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tile-size", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", default="512,1024")
    ap.add_argument("--methods", default="lanczos,tiled")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="upscale-mem-"))
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "DIFFCLI_HOME": str(tmp / "home"), "HF_HUB_OFFLINE": "1"}
    model = build_micro_sd(tmp / "micro-sd")
    base = measure_cmd([sys.executable, "-c", "import torch, diffusers, diffcli.upscale.task"], env)
    print(f"baseline: python + import torch, diffusers: peak RSS {base['maxrss_kb'] / 1024:.0f} MiB")
    print("| method | input | output | tiles | peak RSS (MiB) | wall (s) |")
    print("|---|---|---|---|---|---|")
    for size in [int(s) for s in a.sizes.split(",")]:
        src = make_input(tmp / f"in{size}.png", size)
        for method in a.methods.split(","):
            args = [str(src), "--scale", "4", "--method", method, "-o", str(tmp / "out"), "--json", "--quiet"]
            if method == "tiled":
                args += [
                    "-m",
                    str(model),
                    "--tile-size",
                    str(a.tile_size),
                    "--overlap",
                    str(a.overlap),
                    "--steps",
                    "2",
                    "--strength",
                    "0.5",
                    "--dtype",
                    "float32",
                    "--seed",
                    "1",
                ]
            r = measure(args, env)
            if r["rc"] != 0:
                print(f"| {method} | {size} | FAILED: {r['err']} |")
                continue
            line = json.loads(r["out"])
            tiles = "-"
            if method == "tiled":
                from PIL import Image

                with Image.open(line["path"]) as img:
                    tiles = json.loads(img.info["diffcli"])["upscale"]["tiles"]
            print(
                f"| {method} (tile {a.tile_size}, overlap {a.overlap}) |" if method == "tiled" else f"| {method} |",
                f"{size}x{size} | {line['width']}x{line['height']} | {tiles} | {r['maxrss_kb'] / 1024:.0f} |"
                f" {r['wall_s']:.1f} |",
                flush=True,
            )
            Path(line["path"]).unlink()


if __name__ == "__main__":
    main()

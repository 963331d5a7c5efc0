"""The grid of example outputs in README.md: the bundled model at its default settings.

Usage:

    python bench/readme_grid.py [--out docs/images/examples.png]
"""

from __future__ import annotations

import argparse
import textwrap

import torch
from PIL import Image, ImageDraw

from diffcli import guidance
from diffcli.device import choose
from diffcli.models import resolve
from diffcli.models.layout import read_layout
from diffcli.pipelines import load_base, set_scheduler, task_pipeline

PROMPTS = [
    "castle at dusk",
    "red house on the left, snowy ground, at night",
    "night. lighthouse. sea.",
    "a yellow tree in the desert at noon",
    "blue mountain at dawn",
    "white lighthouse on the right at sunset",
    "a green castle on grass, daytime",
    "purple house in the snow at dawn",
]
CELL, TEXT_H = 160, 44


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="docs/images/examples.png")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    ref = resolve("tiny", offline=True)
    rec = read_layout(ref.path).recommended()
    pipe = task_pipeline(load_base(ref, choose("auto", "auto")), "txt2img")
    set_scheduler(pipe, rec["scheduler"])
    images = pipe(
        PROMPTS,
        num_inference_steps=rec["steps"],
        generator=[torch.Generator("cpu").manual_seed(args.seed) for _ in PROMPTS],
        **guidance.pipeline_kwargs(pipe, rec["cfg"], rec.get("cfg_cutoff"), rec["steps"]),
    ).images
    cols = 4
    rows = (len(PROMPTS) + cols - 1) // cols
    grid = Image.new("RGB", (cols * CELL, rows * (CELL + TEXT_H)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (prompt, img) in enumerate(zip(PROMPTS, images)):
        x, y = (i % cols) * CELL, (i // cols) * (CELL + TEXT_H)
        grid.paste(img.resize((CELL - 8, CELL - 8), Image.NEAREST), (x + 4, y + 4))
        for j, line in enumerate(textwrap.wrap(prompt, 26)[:3]):
            draw.text((x + 6, y + CELL + j * 13), line, fill="black")
    grid.save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()

"""Sample grid of the bundled model next to true renders, for eyeballing.

    python bench/bundled_samples.py [--model DIR] [--out samples.png] [--steps N --cfg X --scheduler NAME]

Each row: a prompt; first cell a true render, then generated images with different seeds.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from diffcli.bundled import MODEL_DIR, scenes  # noqa: E402

from bundled_quality import load_pipe  # noqa: E402

PROMPTS = [
    "castle at dusk",
    "red house on the left, snowy ground, at night",
    "night. lighthouse. sea.",
    "a green tree on the right at noon on grass",
    "a purple mountain in the desert at dawn",
    "a yellow castle on the sand",
    "white lighthouse, left, day, snow",
    "an orange cottage by the sea at sunset",
    "a black tree at night",
    "blue fortress in the middle, morning, meadow",
]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(MODEL_DIR))
    ap.add_argument("--out", default="bundled_samples.png")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--cfg", type=float)
    ap.add_argument("--scheduler")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    d = json.loads((Path(a.model) / "diffcli.json").read_text())
    pipe = load_pipe(a.model, a.scheduler or d["scheduler"])
    steps, cfg = a.steps or d["steps"], a.cfg if a.cfg is not None else d["cfg"]
    n = a.seeds
    grid = Image.new("RGB", (64 * (n + 1), 64 * len(PROMPTS) + 12 * len(PROMPTS)), "white")
    dr = ImageDraw.Draw(grid)
    for r, p in enumerate(PROMPTS):
        y = r * 76
        dr.text((2, y), p, fill="black")
        spec = scenes.parse_prompt(p)[0]
        grid.paste(scenes.render(scenes.sample_scene(random.Random(r), **spec)), (0, y + 12))
        gens = [torch.Generator().manual_seed(s) for s in range(n)]
        ims = pipe([p] * n, num_inference_steps=steps, guidance_scale=cfg, generator=gens).images
        for c, im in enumerate(ims):
            grid.paste(im, (64 * (c + 1), y + 12))
    grid.save(a.out)
    print(f"wrote {a.out} ({steps} steps, cfg {cfg})")


if __name__ == "__main__":
    main()

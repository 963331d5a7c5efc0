"""Training data as a bank of VAE latents with captions, from one of three sources.

  folder   --data DIR: images with same-name .txt captions (centre-cropped, resized)
  prompts  --prompts FILE: the teacher draws the images first (cached as PNG + .txt under the
           checkpoint directory, so an interrupted run does not draw them again)
  scenes   the bundled model's scene generator (default for the bundled teacher); captions are
           drawn fresh from the caption grammar each time a scene is used

The bank (latent mean and std of each image) is built once and saved next to the checkpoints.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

BANK_FILE = "bank.pt"
DATA_DIR = "data"


def load_square(path: Path, size: int) -> Image.Image:
    with Image.open(path) as im:
        im = im.convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return im.resize((size, size), Image.LANCZOS) if im.size != (size, size) else im


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class LatentBank:
    """Latent posterior (mean, std) of every training image and its caption (or scene)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, captions: list, source: str):
        self.mean, self.std, self.captions, self.source = mean, std, captions, source

    def __len__(self) -> int:
        return self.mean.shape[0]

    def caption(self, i: int, rng: random.Random) -> str:
        c = self.captions[i]
        if self.source == "scenes":
            from diffcli.bundled import scenes

            return scenes.caption(scenes.Scene(**c), rng, drop_prob=0.25)
        return c

    def sample(self, n: int, gen: torch.Generator, rng: random.Random):
        idx = torch.randint(0, len(self), (n,), generator=gen)
        mean, std = self.mean[idx].float(), self.std[idx].float()
        z = mean + std * torch.randn(std.shape, generator=gen)
        return z, [self.caption(int(i), rng) for i in idx]

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save({"mean": self.mean, "std": self.std, "captions": self.captions, "source": self.source}, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "LatentBank":
        d = torch.load(path, weights_only=False)
        return cls(d["mean"], d["std"], d["captions"], d["source"])


@torch.no_grad()
def encode(vae, images: list[Image.Image], device, batch: int = 32):
    means, stds = [], []
    for i in range(0, len(images), batch):
        x = to_tensor(images[i : i + batch]).to(device, vae.dtype)
        d = vae.encode(x).latent_dist
        means.append(d.mean.float().cpu())
        stds.append(d.std.float().cpu())
    return torch.cat(means), torch.cat(stds)


def draw_prompt_images(
    pipe,
    prompts: list[str],
    n: int,
    size: int,
    teacher_defaults: dict,
    directory: Path,
    seed: int,
    on_image=lambda done, total: None,
    batch: int = 8,
    shard: tuple[int, int] = (0, 1),
    teacher_id: str = "",
) -> list[tuple[Path, str]]:
    """The teacher draws N images for PROMPTS (cycled) into DIRECTORY; images already there are kept.

    SHARD (rank, world): this process draws every world-th missing image. The folder remembers which
    teacher and settings drew it (meta.json); a different teacher or setting starts it afresh.
    """
    import json
    import shutil

    from diffcli import guidance
    from diffcli.pipelines import set_scheduler

    steps = int(teacher_defaults.get("steps") or 25)
    cfg = float(teacher_defaults.get("cfg") or 7.0)
    cutoff = float(teacher_defaults.get("cfg_cutoff") or 0.0)
    meta = {
        "teacher": teacher_id,
        "size": size,
        "steps": steps,
        "cfg": cfg,
        "seed": seed,
        "scheduler": teacher_defaults.get("scheduler") or "ddim",
        **({"cfg_cutoff": cutoff} if cutoff else {}),
    }
    meta_file = directory / "meta.json"
    rank, world = shard
    if rank == 0:
        try:
            old = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            old = None
        if old is not None and old != meta:
            shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)
        meta_file.write_text(json.dumps(meta) + "\n")
    else:
        directory.mkdir(parents=True, exist_ok=True)
    todo, pairs = [], []
    for i in range(n):
        prompt = prompts[i % len(prompts)]
        png = directory / f"{i:06d}.png"
        pairs.append((png, prompt))
        txt = png.with_suffix(".txt")
        cached = png.is_file() and txt.is_file() and txt.read_text(encoding="utf-8").strip() == prompt.strip()
        if not cached:
            todo.append(i)
    mine = todo[rank::world]
    on_image(n - len(todo), n)
    if not mine:
        return pairs
    original = pipe.scheduler
    set_scheduler(pipe, meta["scheduler"])
    try:
        for k in range(0, len(mine), batch):
            chunk = mine[k : k + batch]
            gens = [torch.Generator().manual_seed(seed * 1_000_003 + i) for i in chunk]
            images = pipe(
                [pairs[i][1] for i in chunk],
                num_inference_steps=steps,
                width=size,
                height=size,
                generator=gens,
                **guidance.pipeline_kwargs(pipe, cfg, cutoff, steps),
            ).images
            for i, im in zip(chunk, images):
                png = pairs[i][0]
                tmp = png.with_name(png.stem + ".tmp.png")
                im.save(tmp)
                tmp.replace(png)
                png.with_suffix(".txt").write_text(pairs[i][1] + "\n", encoding="utf-8")
            on_image(n - len(todo) + (k + len(chunk)) * world, n)
    finally:
        pipe.scheduler = original
    return pairs


def predraw(plan, pipe, rank: int, world: int, reporter) -> None:
    """--prompts with several processes: each draws its share of the teacher's images before the bank is built."""
    if plan.source != "prompts" or (plan.ckpt / BANK_FILE).is_file():
        return
    n = plan.config.num_samples or len(plan.items)
    reporter.phase("data", source="prompts", images=n)
    draw_prompt_images(
        pipe,
        plan.items,
        n,
        plan.config.resolution,
        plan.teacher_defaults,
        plan.ckpt / DATA_DIR,
        plan.config.seed,
        on_image=lambda d, t: reporter.count("data", min(d, t), t, "teacher draws"),
        shard=(rank, world),
        teacher_id=str(plan.ref.path),
    )


def build_bank(plan, pipe, device, reporter, chunk: int = 64) -> LatentBank:
    """The bank for PLAN's data source, loaded from the checkpoint directory when already built.

    Images are read and encoded a chunk at a time, so a large --data folder never sits in memory as pixels.
    """
    path = plan.ckpt / BANK_FILE
    if path.is_file():
        return LatentBank.load(path)
    cfg = plan.config
    size = cfg.resolution
    if plan.source == "scenes":
        reporter.phase("data", source="scenes", images=cfg.num_samples)
        from dataclasses import asdict

        from diffcli.bundled import scenes

        rng = random.Random(cfg.seed + 7)
        specs = [asdict(scenes.sample_scene(rng)) for _ in range(cfg.num_samples)]
        files = [(spec, spec) for spec in specs]

        def read(spec):
            return scenes.render(scenes.Scene(**spec), size)
    else:
        if plan.source == "prompts":
            n = cfg.num_samples or len(plan.items)
            reporter.phase("data", source="prompts", images=n)
            files = draw_prompt_images(
                pipe,
                plan.items,
                n,
                size,
                plan.teacher_defaults,
                plan.ckpt / DATA_DIR,
                cfg.seed,
                teacher_id=str(plan.ref.path),
                on_image=lambda d, t: reporter.count("data", min(d, t), t, "teacher draws"),
            )
        else:
            reporter.phase("data", source="folder", images=len(plan.items))
            files = [(img, txt.read_text(encoding="utf-8").strip()) for img, txt in plan.items]

        def read(img):
            try:
                return load_square(img, size)
            except OSError as exc:
                from diffcli.errors import UsageError

                raise UsageError(f"--data: cannot read image {img}: {exc}") from None

    reporter.phase("encode", images=len(files))
    means, stds = [], []
    reporter.count("encode", 0, len(files), "encode images")
    for i in range(0, len(files), chunk):
        m, s = encode(pipe.vae, [read(f) for f, _ in files[i : i + chunk]], device)
        means.append(m)
        stds.append(s)
        reporter.count("encode", min(i + chunk, len(files)), len(files), "encode images")
    # float16 halves the memory of large banks (SD-1.5 at 512: 64 KB per image instead of 128 KB)
    bank = LatentBank(torch.cat(means).half(), torch.cat(stds).half(), [c for _, c in files], plan.source)
    bank.save(path)
    return bank

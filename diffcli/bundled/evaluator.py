"""Attribute evaluator for bundled-domain images: a small CNN trained on renders.

    python -m diffcli.bundled.evaluator train [--steps N]   # writes diffcli/bundled/evaluator/
    python -m diffcli.bundled.evaluator test [--n N]        # accuracy on held-out renders

API: ``load_evaluator()`` -> ``Evaluator`` with ``.predict(images)``, ``.features(images)`` and
``.score(prompts_or_specs, images)``; ``frechet_distance(a, b)``.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

from . import scenes

WEIGHTS_DIR = Path(__file__).resolve().parent / "evaluator"
HEADS = {a: scenes.VALUES[a] for a in scenes.ATTRIBUTES}
SIZE = 64


def _net():
    import torch.nn as nn

    def block(i, o, s):
        return [nn.Conv2d(i, o, 3, s, 1), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(*block(3, 32, 2), *block(32, 64, 1), *block(64, 128, 2),
                                      *block(128, 128, 1), *block(128, 128, 2), nn.AdaptiveAvgPool2d(4),
                                      nn.Flatten(), nn.Linear(128 * 16, 256), nn.ReLU(inplace=True))
            self.heads = nn.ModuleDict({a: nn.Linear(256, len(v)) for a, v in HEADS.items()})

        def forward(self, x):
            f = self.body(x)
            return f, {a: h(f) for a, h in self.heads.items()}

    return Net()


def to_tensor(images):
    """PIL images (any size) or uint8 arrays -> float tensor (n, 3, 64, 64) in [-1, 1]."""
    import torch
    from PIL import Image

    arrs = []
    for im in images:
        if not isinstance(im, Image.Image):
            im = Image.fromarray(np.asarray(im))
        im = im.convert("RGB")
        if im.size != (SIZE, SIZE):
            im = im.resize((SIZE, SIZE), Image.BICUBIC if im.size[0] < SIZE else Image.BOX)
        arrs.append(np.asarray(im))
    x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float()
    return x.div(127.5).sub(1.0)


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows = samples)."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr(sqrt(s1 s2)) = sum of sqrt of the (real, >= 0) eigenvalues of s1 @ s2
    ev = np.linalg.eigvals(s1 @ s2)
    tr_sqrt = np.sqrt(np.clip(ev.real, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def _spec(p) -> dict:
    if isinstance(p, str):
        return scenes.parse_prompt(p)[0]
    if isinstance(p, scenes.Scene):
        return p.attrs()
    return {k: v for k, v in dict(p).items() if k in HEADS and v is not None}


class Evaluator:
    def __init__(self, net):
        self.net = net.eval()

    def _run(self, images, batch: int = 256):
        import torch

        feats, logits = [], {a: [] for a in HEADS}
        with torch.no_grad():
            for i in range(0, len(images), batch):
                f, out = self.net(to_tensor(images[i:i + batch]))
                feats.append(f.numpy())
                for a in HEADS:
                    logits[a].append(out[a].numpy())
        return np.concatenate(feats), {a: np.concatenate(v) for a, v in logits.items()}

    def predict(self, images) -> list[dict]:
        """Predicted attributes (time, ground, obj, color, position) of each image."""
        _, lg = self._run(list(images))
        idx = {a: v.argmax(1) for a, v in lg.items()}
        return [{a: HEADS[a][idx[a][i]] for a in HEADS} for i in range(len(images))]

    def features(self, images) -> np.ndarray:
        """Penultimate-layer features (n, 256)."""
        return self._run(list(images))[0]

    def score(self, prompts_or_specs, images, reference=None, seed: int = 0) -> dict:
        """Prompt adherence, per-attribute accuracy and Fréchet distance vs true renders.

        ``prompts_or_specs``: prompts (parsed with ``parse_prompt``), attribute dicts or Scenes, one
        per image. ``reference``: real images for the Fréchet distance; by default one render per
        prompt (unstated attributes sampled with ``seed``).
        """
        images = list(images)
        specs = [_spec(p) for p in prompts_or_specs]
        assert len(specs) == len(images), "one prompt/spec per image"
        feats, lg = self._run(images)
        preds = [{a: HEADS[a][lg[a][i].argmax()] for a in HEADS} for i in range(len(images))]
        per = {a: [] for a in HEADS}
        ok_all = []
        for s, p in zip(specs, preds):
            oks = [p[a] == v for a, v in s.items()]
            for a, v in s.items():
                per[a].append(p[a] == v)
            ok_all.append(all(oks))
        if reference is None:
            rng = random.Random(seed)
            reference = [scenes.render(scenes.sample_scene(rng, **s)) for s in specs]
        fd = frechet_distance(feats, self.features(reference)) if len(images) > 2 else float("nan")
        return {
            "adherence": float(np.mean(ok_all)) if ok_all else float("nan"),
            "accuracy": {a: float(np.mean(v)) for a, v in per.items() if v},
            "counts": {a: len(v) for a, v in per.items()},
            "fd": fd,
            "n": len(images),
        }


def load_evaluator(path: str | Path = WEIGHTS_DIR) -> Evaluator:
    import torch
    from safetensors.torch import load_file

    net = _net()
    sd = load_file(str(Path(path) / "model.safetensors"))
    net.load_state_dict({k: v.float() for k, v in sd.items()})
    return Evaluator(net)


# ------------------------------------------------------------------ training
def _augment(x, gen):
    """Mild degradations so generated (blurry, noisy) images are judged like renders."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    # random blur by down/up-sampling a part of the batch
    m = torch.rand(n, generator=gen) < 0.5
    if m.any():
        s = int(torch.randint(24, 56, (1,), generator=gen))
        y = F.interpolate(F.interpolate(x[m], size=s, mode="bilinear", antialias=True, align_corners=False),
                          size=SIZE, mode="bilinear", align_corners=False)
        x = x.clone()
        x[m] = y
    x = x + torch.randn(x.shape, generator=gen) * (torch.rand(n, 1, 1, 1, generator=gen) * 0.08)
    x = x * (1 + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.1)  # brightness
    shift = torch.randint(-2, 3, (2,), generator=gen).tolist()
    return torch.roll(x, shifts=shift, dims=(2, 3)).clamp(-1, 1)


def make_data(n: int, seed: int):
    rng = random.Random(seed)
    sc = [scenes.sample_scene(rng) for _ in range(n)]
    imgs = [scenes.render(s, SIZE) for s in sc]
    labels = {a: np.array([HEADS[a].index(getattr(s, a)) for s in sc]) for a in HEADS}
    return imgs, labels


def train(steps: int = 1500, n: int = 16000, batch: int = 64, out: Path = WEIGHTS_DIR, threads: int = 1,
          seed: int = 0, log=print):
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    imgs, labels = make_data(n, seed)
    x_all = to_tensor(imgs)
    y_all = {a: torch.from_numpy(v) for a, v in labels.items()}
    log(f"rendered {n} in {time.time() - t0:.1f}s")
    net = _net()
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps, pct_start=0.1)
    net.train()
    for step in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        _, out_ = net(_augment(x_all[idx], gen))
        loss = sum(F.cross_entropy(out_[a], y_all[a][idx]) for a in HEADS)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            log(f"step {step} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
    net.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in net.state_dict().items() if v.is_floating_point()} |
              {k: v for k, v in net.state_dict().items() if not v.is_floating_point()},
              str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({"heads": HEADS, "size": SIZE, "steps": steps, "train_renders": n,
                                                 "seed": seed}, indent=2) + "\n")
    log(f"saved to {out} ({time.time() - t0:.0f}s)")
    return Evaluator(net)


def heldout_accuracy(ev: Evaluator, n: int = 1000, seed: int = 987654) -> dict:
    imgs, labels = make_data(n, seed)
    preds = ev.predict(imgs)
    return {a: float(np.mean([HEADS[a].index(p[a]) == labels[a][i] for i, p in enumerate(preds)])) for a in HEADS}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["train", "test"])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--n", type=int, default=16000, help="renders (train) / held-out renders (test)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(WEIGHTS_DIR))
    a = ap.parse_args(argv)
    if a.cmd == "train":
        ev = train(a.steps, a.n, out=Path(a.out), threads=a.threads)
        print("held-out accuracy (1000 renders):", heldout_accuracy(ev))
    else:
        import torch

        torch.set_num_threads(a.threads)
        print("held-out accuracy:", heldout_accuracy(load_evaluator(a.out), a.n))


if __name__ == "__main__":
    main()

"""Attribute evaluator for bundled-domain images: a small CNN trained on renders (recipe:
diffcli.training.evaluator).

API: ``load_evaluator()`` -> ``Evaluator`` with ``.predict(images)``, ``.features(images)`` and
``.score(prompts_or_specs, images)``; ``frechet_distance(a, b)``; ``make_net()``, the untrained network.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from . import scenes

WEIGHTS_DIR = Path(__file__).resolve().parent / "evaluator"
HEADS = {a: scenes.VALUES[a] for a in scenes.ATTRIBUTES}
SIZE = 64


def make_net():
    import torch.nn as nn

    def block(i, o, s):
        return [nn.Conv2d(i, o, 3, s, 1), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                *block(3, 32, 2),
                *block(32, 64, 1),
                *block(64, 128, 2),
                *block(128, 128, 1),
                *block(128, 128, 2),
                nn.AdaptiveAvgPool2d(4),
                nn.Flatten(),
                nn.Linear(128 * 16, 256),
                nn.ReLU(inplace=True),
            )
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
                f, out = self.net(to_tensor(images[i : i + batch]))
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
    from safetensors.torch import load_file

    net = make_net()
    sd = load_file(str(Path(path) / "model.safetensors"))
    net.load_state_dict({k: v.float() for k, v in sd.items()})
    return Evaluator(net)

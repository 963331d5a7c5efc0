"""Object segmenter for bundled-domain images: a small fully convolutional net trained on renders.

    python -m diffcli.bundled.segmenter train [--steps N]   # writes diffcli/bundled/segmenter/
    python -m diffcli.bundled.segmenter test [--n N]        # IoU on held-out renders

It finds the scene's object (the pixels `scenes.object_mask` covers) in a 64x64 image, so the
silhouette of a generated object can be compared with the control map it was drawn from
(bench/control_quality.py), and `diffcli control preprocess --kind seg` can turn a scene image into
the control map of the bundled ControlNet. Trained with the evaluator's degradations (blur, noise,
brightness, small shifts), so generated images are judged like renders.

API: ``load_segmenter()`` -> ``Segmenter`` with ``.masks(images)`` (float coverage, n x 64 x 64);
``iou(a, b)``.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

from . import scenes

WEIGHTS_DIR = Path(__file__).resolve().parent / "segmenter"
SIZE = 64


def _net():
    import torch
    import torch.nn as nn

    def conv(i, o, s=1, d=1):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, d, dilation=d), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1 = nn.Sequential(conv(3, 16))                           # 64
            self.enc2 = nn.Sequential(conv(16, 32, 2), conv(32, 32))        # 32
            self.enc3 = nn.Sequential(conv(32, 48, 2), conv(48, 48, d=2), conv(48, 48, d=4))  # 16
            self.up2 = nn.Sequential(conv(48 + 32, 32))
            self.up1 = nn.Sequential(conv(32 + 16, 16), nn.Conv2d(16, 1, 3, 1, 1))

        def forward(self, x):
            import torch.nn.functional as F

            e1 = self.enc1(x)
            e2 = self.enc2(e1)
            e3 = self.enc3(e2)
            u2 = self.up2(torch.cat([F.interpolate(e3, scale_factor=2, mode="nearest"), e2], 1))
            return self.up1(torch.cat([F.interpolate(u2, scale_factor=2, mode="nearest"), e1], 1))

    return Net()


def iou(a, b, threshold: float = 0.5) -> np.ndarray:
    """Intersection over union of masks A and B (n x h x w, coverage in [0, 1]) thresholded at THRESHOLD."""
    a, b = np.asarray(a) >= threshold, np.asarray(b) >= threshold
    inter = (a & b).sum(axis=(-2, -1))
    union = (a | b).sum(axis=(-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


class Segmenter:
    def __init__(self, net):
        self.net = net.eval()

    def masks(self, images, batch: int = 256) -> np.ndarray:
        """The object's coverage in each image (PIL images or uint8 arrays, any size): n x 64 x 64 in [0, 1]."""
        import torch

        from .evaluator import to_tensor

        images = list(images)
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch):
                out.append(torch.sigmoid(self.net(to_tensor(images[i:i + batch])))[:, 0].numpy())
        return np.concatenate(out) if out else np.zeros((0, SIZE, SIZE), np.float32)


def load_segmenter(path: str | Path = WEIGHTS_DIR) -> Segmenter:
    from safetensors.torch import load_file

    net = _net()
    sd = load_file(str(Path(path) / "model.safetensors"))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    return Segmenter(net)


# ------------------------------------------------------------------ training
def augment(x, y, gen):
    """The evaluator's degradations (blur, noise, brightness, a small shift; the mask shifts too)."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    m = torch.rand(n, generator=gen) < 0.5
    if m.any():
        s = int(torch.randint(24, 56, (1,), generator=gen))
        x = x.clone()
        x[m] = F.interpolate(F.interpolate(x[m], size=s, mode="bilinear", antialias=True, align_corners=False),
                             size=SIZE, mode="bilinear", align_corners=False)
    x = x + torch.randn(x.shape, generator=gen) * (torch.rand(n, 1, 1, 1, generator=gen) * 0.08)
    x = x * (1 + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.1)
    shift = torch.randint(-2, 3, (2,), generator=gen).tolist()
    return torch.roll(x, shifts=shift, dims=(2, 3)).clamp(-1, 1), torch.roll(y, shifts=shift, dims=(2, 3))


def make_data(n: int, seed: int):
    rng = random.Random(seed)
    sc = [scenes.sample_scene(rng) for _ in range(n)]
    return [scenes.render(s, SIZE) for s in sc], np.stack([scenes.object_mask(s, SIZE) for s in sc])


def train(steps: int = 800, n: int = 4000, batch: int = 32, out: Path = WEIGHTS_DIR, threads: int = 1,
          seed: int = 0, log=print):
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from .evaluator import to_tensor

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    imgs, masks = make_data(n, seed)
    x_all, y_all = to_tensor(imgs), torch.from_numpy(masks)[:, None]
    log(f"rendered {n} in {time.time() - t0:.1f}s")
    net = _net()
    opt = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps, pct_start=0.1)
    net.train()
    for step in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        x, y = augment(x_all[idx], y_all[idx], gen)
        logits = net(x)
        loss = F.binary_cross_entropy_with_logits(logits, y)
        p = torch.sigmoid(logits)
        loss = loss + (1 - (2 * (p * y).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + y.sum((1, 2, 3)) + 1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            log(f"step {step} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
    net.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sd = net.state_dict()
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()},
              str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({"size": SIZE, "steps": steps, "train_renders": n, "seed": seed},
                                                indent=2) + "\n")
    log(f"saved to {out} ({time.time() - t0:.0f}s)")
    return Segmenter(net)


def heldout_iou(seg: Segmenter, n: int = 1000, seed: int = 987654) -> float:
    imgs, masks = make_data(n, seed)
    return float(iou(seg.masks(imgs), masks).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["train", "test"])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--n", type=int, default=4000, help="renders (train) / held-out renders (test)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(WEIGHTS_DIR))
    a = ap.parse_args(argv)
    if a.cmd == "train":
        seg = train(a.steps, a.n, out=Path(a.out), threads=a.threads)
        print("held-out IoU (1000 renders):", heldout_iou(seg))
    else:
        import torch

        torch.set_num_threads(a.threads)
        print("held-out IoU:", heldout_iou(load_segmenter(a.out), a.n))


if __name__ == "__main__":
    main()

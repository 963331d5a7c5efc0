"""Object segmenter for bundled-domain images: a small fully convolutional net trained on renders
(recipe: diffcli.training.segmenter).

It finds the scene's object (the pixels `scenes.object_mask` covers) in a 64x64 image, so the
silhouette of a generated object can be compared with the control map it was drawn from
(bench/control_quality.py), and `diffcli control preprocess --kind seg` can turn a scene image into
the control map of the bundled ControlNet. Trained with the evaluator's degradations (blur, noise,
brightness, small shifts), so generated images are judged like renders.

API: ``load_segmenter()`` -> ``Segmenter`` with ``.masks(images)`` (float coverage, n x 64 x 64);
``iou(a, b)``; ``make_net()``, the untrained network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WEIGHTS_DIR = Path(__file__).resolve().parent / "segmenter"
SIZE = 64


def make_net():
    import torch
    import torch.nn as nn

    def conv(i, o, s=1, d=1):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, d, dilation=d), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1 = nn.Sequential(conv(3, 16))  # 64
            self.enc2 = nn.Sequential(conv(16, 32, 2), conv(32, 32))  # 32
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
                out.append(torch.sigmoid(self.net(to_tensor(images[i : i + batch])))[:, 0].numpy())
        return np.concatenate(out) if out else np.zeros((0, SIZE, SIZE), np.float32)


def load_segmenter(path: str | Path = WEIGHTS_DIR) -> Segmenter:
    from safetensors.torch import load_file

    net = make_net()
    sd = load_file(str(Path(path) / "model.safetensors"))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    return Segmenter(net)

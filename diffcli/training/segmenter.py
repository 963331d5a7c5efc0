"""Training recipe for the bundled scene segmenter (diffcli.bundled.segmenter), and its held-out test.

    python -m diffcli.training.segmenter train [--steps N]   # writes diffcli/bundled/segmenter/
    python -m diffcli.training.segmenter test [--n N]        # IoU on held-out renders

Trained on renders with the evaluator's degradations (blur, noise, brightness, small shifts), so
generated images are judged like renders.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

from diffcli.bundled import scenes
from diffcli.bundled.segmenter import SIZE, WEIGHTS_DIR, Segmenter, iou, load_segmenter, make_net


def augment(x, y, gen):
    """The evaluator's degradations (blur, noise, brightness, a small shift; the mask shifts too)."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    m = torch.rand(n, generator=gen) < 0.5
    if m.any():
        s = int(torch.randint(24, 56, (1,), generator=gen))
        x = x.clone()
        x[m] = F.interpolate(
            F.interpolate(x[m], size=s, mode="bilinear", antialias=True, align_corners=False),
            size=SIZE,
            mode="bilinear",
            align_corners=False,
        )
    x = x + torch.randn(x.shape, generator=gen) * (torch.rand(n, 1, 1, 1, generator=gen) * 0.08)
    x = x * (1 + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.1)
    shift = torch.randint(-2, 3, (2,), generator=gen).tolist()
    return torch.roll(x, shifts=shift, dims=(2, 3)).clamp(-1, 1), torch.roll(y, shifts=shift, dims=(2, 3))


def make_data(n: int, seed: int):
    rng = random.Random(seed)
    sc = [scenes.sample_scene(rng) for _ in range(n)]
    return [scenes.render(s, SIZE) for s in sc], np.stack([scenes.object_mask(s, SIZE) for s in sc])


def train(
    steps: int = 800,
    n: int = 4000,
    batch: int = 32,
    out: Path = WEIGHTS_DIR,
    threads: int = 1,
    seed: int = 0,
    log=print,
):
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from diffcli.bundled.evaluator import to_tensor

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    imgs, masks = make_data(n, seed)
    x_all, y_all = to_tensor(imgs), torch.from_numpy(masks)[:, None]
    log(f"rendered {n} in {time.time() - t0:.1f}s")
    net = make_net()
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
    save_file(
        {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()},
        str(out / "model.safetensors"),
    )
    (out / "config.json").write_text(
        json.dumps({"size": SIZE, "steps": steps, "train_renders": n, "seed": seed}, indent=2) + "\n"
    )
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

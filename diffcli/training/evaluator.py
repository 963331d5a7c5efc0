"""Training recipe for the bundled attribute evaluator (diffcli.bundled.evaluator), and its held-out test.

Usage:

    python -m diffcli.training.evaluator train [--steps N]   # writes diffcli/bundled/evaluator/
    python -m diffcli.training.evaluator test [--n N]        # accuracy on held-out renders
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

from diffcli.bundled import scenes
from diffcli.bundled.evaluator import HEADS, SIZE, WEIGHTS_DIR, Evaluator, load_evaluator, make_net, to_tensor


def augment(x, gen):
    """Mild degradations so generated (blurry, noisy) images are judged like renders."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    # random blur by down/up-sampling a part of the batch
    m = torch.rand(n, generator=gen) < 0.5
    if m.any():
        s = int(torch.randint(24, 56, (1,), generator=gen))
        y = F.interpolate(
            F.interpolate(x[m], size=s, mode="bilinear", antialias=True, align_corners=False),
            size=SIZE,
            mode="bilinear",
            align_corners=False,
        )
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


def train(
    steps: int = 1500,
    n: int = 16000,
    batch: int = 64,
    out: Path = WEIGHTS_DIR,
    threads: int = 1,
    seed: int = 0,
    log=print,
):
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
    net = make_net()
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps, pct_start=0.1)
    net.train()
    for step in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        _, out_ = net(augment(x_all[idx], gen))
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
    save_file(
        {k: v.half().contiguous() for k, v in net.state_dict().items() if v.is_floating_point()}
        | {k: v for k, v in net.state_dict().items() if not v.is_floating_point()},
        str(out / "model.safetensors"),
    )
    (out / "config.json").write_text(
        json.dumps({"heads": HEADS, "size": SIZE, "steps": steps, "train_renders": n, "seed": seed}, indent=2) + "\n"
    )
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

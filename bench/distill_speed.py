"""Speed of `diffcli distill` on the bundled model's architecture (random weights: no trained model needed).

    python bench/distill_speed.py [--method lcm] [--batch 24] [--steps 12] [--threads 1]

Builds a full-size bundled-architecture teacher in a temp dir, runs a short distillation through the
CLI code path (scenes data, --no-report) and prints seconds per training step, and the projected time of
the default run (bundled teacher: see diffcli/distill/preflight.py METHOD_DEFAULTS).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_teacher(path: Path) -> Path:
    import torch

    from diffcli.bundled.vocab import build_tokenizer
    from diffcli.training import arch
    from diffcli.training.export import export_pipeline

    torch.manual_seed(0)
    tok = build_tokenizer(path.parent / "_tok")
    export_pipeline(
        path,
        arch.make_vae("full"),
        arch.make_text_encoder("full"),
        arch.make_unet("full"),
        tok,
        arch.make_scheduler("dpm++2m"),
    )
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="lcm", choices=["lcm", "lcm-lora"])
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--teacher", default=None, help="use this teacher directory instead of a random full-size one")
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    import diffcli.bundled as bundled
    from diffcli.distill.config import DistillConfig
    from diffcli.distill.events import make_events
    from diffcli.distill.preflight import METHOD_DEFAULTS, plan
    from diffcli.training.distill.trainer import make_accelerator, train

    tmp = Path(tempfile.mkdtemp(prefix="distill-speed-"))
    teacher = Path(a.teacher) if a.teacher else build_teacher(tmp / "teacher")
    bundled.MODEL_DIR = teacher  # resolve("tiny") -> this directory, source "bundled" (scenes data)
    default_steps, default_batch, _ = METHOD_DEFAULTS[(a.method, True)]
    cfg = DistillConfig(
        teacher="tiny",
        out=str(tmp / "student"),
        method=a.method,
        max_train_steps=a.steps,
        batch_size=a.batch or default_batch,
        num_samples=a.samples,
        report=False,
        checkpoint_every=10**6,
    )
    p = plan(cfg)
    acc = make_accelerator(p.config)

    ev = make_events(True, True)
    times = []
    orig = ev.train

    def train_hook(step, steps, loss, lr, emit):
        times.append(time.perf_counter())
        orig(step, steps, loss, lr, emit)

    ev.train = train_hook
    t0 = time.perf_counter()
    summary = train(p, ev, acc)
    total = time.perf_counter() - t0
    steady = [b - a_ for a_, b in zip(times[1:], times[2:])]  # skip the first (warm-up) step
    per_step = sum(steady) / len(steady)
    result = {
        "method": a.method,
        "batch": p.config.batch_size,
        "threads": a.threads,
        "steps": a.steps,
        "sec_per_step": round(per_step, 3),
        "setup_and_total_s": round(total, 1),
        "default_steps": default_steps,
        "projected_default_run_min": round(default_steps * per_step / 60, 1),
        "loss": summary["loss"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Helpers the training recipes share: rendered batches of bundled scenes, a step or time budget, the
learning-rate schedule, a thread tuner for shared CPUs, EMA, checkpoints and timestep sampling."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from diffcli.bundled import scenes


def render_batch(rng: random.Random, n: int, size: int = 64):
    """n random scenes and their renders as a uint8 tensor (n, 3, size, size)."""
    sc = [scenes.sample_scene(rng) for _ in range(n)]
    arr = np.stack([np.asarray(scenes.render(s, size)) for s in sc])
    return sc, torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(127.5).sub(1.0)


class Budget:
    """Progress in [0, 1] from a step budget or a time budget (elapsed time survives resumes)."""

    def __init__(self, steps: int | None, minutes: float | None, elapsed: float = 0.0):
        self.steps, self.seconds = steps, (minutes or 0) * 60
        self.t0 = time.time() - elapsed

    @property
    def elapsed(self) -> float:
        return time.time() - self.t0

    def progress(self, step: int) -> float:
        if self.steps:
            return min(1.0, step / self.steps)
        return min(1.0, self.elapsed / max(self.seconds, 1e-9))

    def done(self, step: int) -> bool:
        return self.progress(step) >= 1.0


def lr_at(progress: float, step: int, base: float, warmup: int, floor: float = 0.05) -> float:
    w = min(1.0, (step + 1) / warmup)
    return base * w * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


class ThreadTuner:
    """Pick 1 or ``max_threads`` torch threads by timing both now and then.

    On a shared CPU, a niced multi-threaded process stalls on its slowest thread when another
    process takes a core; one thread is then several times faster. Call ``step()`` once per step.
    """

    def __init__(self, max_threads: int, probe: int = 10, every: int = 200):
        self.options = sorted({1, max_threads})
        self.probe, self.every = probe, every
        self.i, self.times, self.choice = 0, {}, max_threads
        self.t = time.perf_counter()
        torch.set_num_threads(self.choice)

    def step(self):
        now = time.perf_counter()
        dt, self.t = now - self.t, now
        if len(self.options) == 1:
            return
        k = self.i % self.every
        self.i += 1
        n = len(self.options) * self.probe
        if k < n:
            opt = self.options[k // self.probe]
            if k % self.probe:  # first step after a switch is not timed
                self.times.setdefault(opt, []).append(dt)
            nxt = self.options[(k + 1) // self.probe] if k + 1 < n else None
            if nxt is None:
                self.choice = min(self.times, key=lambda o: sum(self.times[o]) / len(self.times[o]))
                self.times = {}
                torch.set_num_threads(self.choice)
            elif nxt != opt or k == 0:
                torch.set_num_threads(nxt)


def save_ckpt(path: Path, **state):
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_ckpt(path: Path, rng: random.Random, opt, **modules) -> dict:
    """Restore a stage's checkpoint: each module from its key, the optimizer and the RNGs; returns it."""
    st = torch.load(path, weights_only=False)
    for key, module in modules.items():
        module.load_state_dict(st[key])
    opt.load_state_dict(st["opt"])
    rng.setstate(st["rng"])
    if "torch_rng" in st:
        torch.set_rng_state(st["torch_rng"])
    return st


def sample_timesteps(n: int, total: int, high_frac: float, device, high_start: float = 0.9) -> torch.Tensor:
    """Uniform timesteps, with a fraction ``high_frac`` drawn from [high_start * total, total).

    The noisiest steps are where the layout is decided from the prompt alone (zero terminal SNR: no
    trace of the image is left). A UNet without positional encodings learns "on the left" only once
    enough of its loss comes from there; uniform sampling gives it too little (measured: see
    docs/bundled-model.md)."""
    t = torch.randint(0, total, (n,))
    high = torch.rand(n) < high_frac
    t[high] = torch.randint(int(total * high_start), total, (int(high.sum()),))
    return t.to(device)


@torch.no_grad()
def ema_update(ema, model, decay: float):
    ep = list(ema.parameters())
    mp = [p.detach().float() for p in model.parameters()]
    torch._foreach_lerp_(ep, mp, 1 - decay)


def optimizer_step(loss: torch.Tensor, model, opt, ema, step: int, ema_start: int, ema_decay: float) -> int:
    """Backpropagate LOSS, clip MODEL's gradient norm to 1, step OPT, then (from step EMA_START on: a copy at
    it) move EMA toward MODEL with decay min(EMA_DECAY, (1 + step) / (10 + step)); the new step count."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    step += 1
    if step >= ema_start:
        ema_update(ema, model, 0.0 if step == ema_start else min(ema_decay, (1 + step) / (10 + step)))
    return step


class Chores:
    """What a recipe's loop does after each step besides learning: a running loss in a log line every
    LOG_EVERY steps, REFRESH() every REFRESH_EVERY steps (new examples in the buffer), CHECKPOINT() every
    CKPT_MINUTES and EXPORT() every EXPORT_MINUTES of wall time."""

    def __init__(self, name: str, log, *, log_every: int, refresh, refresh_every: int, checkpoint, ckpt_minutes: float,
                 export, export_minutes: float) -> None:  # fmt: skip
        self.name, self.log, self.log_every = name, log, log_every
        self.refresh, self.refresh_every = refresh, refresh_every
        self.timed = [[checkpoint, ckpt_minutes * 60, time.time()], [export, export_minutes * 60, time.time()]]
        self.loss_avg: float | None = None

    def after(self, step: int, loss: float, lr: float, budget: Budget, tuner: ThreadTuner) -> None:
        self.loss_avg = loss if self.loss_avg is None else 0.98 * self.loss_avg + 0.02 * loss
        if step % self.log_every == 0:
            self.log(
                f"{self.name} step {step} loss {self.loss_avg:.4f} lr {lr:.2e} elapsed {budget.elapsed / 60:.1f} min "
                f"threads {tuner.choice}"
            )
        if step % self.refresh_every == 0:
            self.refresh()
        for entry in self.timed:
            fn, seconds, last = entry
            if time.time() - last > seconds:
                entry[2] = time.time()
                fn()


def add_recipe_args(ap, *, out: str, base_help: str, ckpt_dir: str, minutes: float, batch: int, buffer: int,
                    buffer_help: str, lr: float, warmup: int) -> None:  # fmt: skip
    """The options of a recipe that trains beside the bundled model (--out, --base, --ckpt-dir, the time or step
    budget, --resume, --seed, --batch, --buffer, --lr, --warmup), with the recipe's defaults."""
    from diffcli.bundled import MODEL_DIR

    ap.add_argument("--out", default=out)
    ap.add_argument("--base", default=str(MODEL_DIR), help=base_help)
    ap.add_argument("--ckpt-dir", default=ckpt_dir)
    ap.add_argument("--minutes", type=float, default=minutes)
    ap.add_argument("--steps", type=int, default=None, help="step budget (overrides --minutes)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=batch)
    ap.add_argument("--buffer", type=int, default=buffer, help=buffer_help)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--warmup", type=int, default=warmup)


def add_loop_args(ap, *, ema: float, refresh_every: int, ckpt_every: float, export_every: float = 10.0) -> None:
    """The options of a recipe's loop (EMA, buffer refreshes, checkpoints, exports, threads, bf16), with the
    recipe's defaults."""
    ap.add_argument("--ema", type=float, default=ema)
    ap.add_argument("--ema-start", type=int, default=100)
    ap.add_argument("--refresh-every", type=int, default=refresh_every)
    ap.add_argument("--ckpt-every", type=float, default=ckpt_every, help="minutes")
    ap.add_argument("--export-every", type=float, default=export_every, help="minutes")
    ap.add_argument("--threads", type=int, default=1, help="1, or 2 to let it time 1 vs 2 now and then")
    ap.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 autocast (only where the CPU/GPU has bf16 units; 15x slower on plain x86 cores)",
    )


def file_logger(ckpt_dir):
    """A log function writing each message, timed, to stdout and to CKPT_DIR/train.log (made if missing)."""
    Path(ckpt_dir).mkdir(parents=True, exist_ok=True)
    logf = Path(ckpt_dir) / "train.log"

    def log(msg):
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(logf, "a") as f:
            f.write(line + "\n")

    return log


def run_logged(args, train) -> int:
    """TRAIN(args, log) with ARGS.threads torch threads, LOG writing timed lines to stdout and to
    ARGS.ckpt_dir/train.log (the arguments first, the final step last); the final step."""
    torch.set_num_threads(args.threads)
    log = file_logger(args.ckpt_dir)
    log(f"args: {vars(args)}")
    step = train(args, log)
    log(f"training finished at step {step}")
    return step


def load_frozen_base(model_dir):
    """(vae, text_encoder, unet, tokenizer) of the bundled-layout model at MODEL_DIR in float32, the three
    models in eval mode with their gradients off (a recipe trains a new module beside them, or a copy)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from diffcli import loading

    d = Path(model_dir)
    f32 = {"torch_dtype": torch.float32}
    vae = loading.from_pretrained(AutoencoderKL, d / "vae", **f32).eval().requires_grad_(False)
    te = loading.from_pretrained(CLIPTextModel, d / "text_encoder", **f32).eval().requires_grad_(False)
    unet = loading.from_pretrained(UNet2DConditionModel, d / "unet", **f32).eval().requires_grad_(False)
    tok = loading.from_pretrained(CLIPTokenizer, d / "tokenizer")
    return vae, te, unet, tok

"""The distillation loop on accelerate: `accelerate launch` / `torchrun` scale it with no change.

Gradient accumulation and mixed precision come from the Accelerator; the student (or its LoRA) is the
only thing trained; checkpoints are written every N steps and on Ctrl-C (single process), and
`--resume` continues from the last one with the exact step count and random state.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch

from diffcli.distill.components import from_pretrained
from diffcli.distill.preflight import Plan, run_fingerprint
from diffcli.errors import RuntimeFailure, UsageError
from diffcli.training.distill import checkpoint as C


def make_accelerator(config):
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    cpu = config.device == "cpu" or not cuda
    if config.device not in (None, "auto", "cpu") and not str(config.device).startswith("cuda"):
        raise UsageError(f"--device {config.device}: distill runs on cpu or cuda")
    if cpu and config.mixed_precision == "fp16":
        raise UsageError("--mixed-precision fp16 needs a GPU; use bf16 (or no) on the CPU")
    from datetime import timedelta

    from accelerate.utils import InitProcessGroupKwargs

    # barriers wait while the main process builds the data bank: allow hours, not the default minutes
    return Accelerator(
        cpu=cpu,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=3))],
    )


def load_teacher(plan: Plan, device):
    """The teacher pipeline in float32, frozen."""
    from diffusers import DiffusionPipeline

    from diffcli.pipelines import prepare_libraries
    from diffcli.schedulers import ORIGINAL_SCHEDULER

    prepare_libraries()
    try:
        pipe = from_pretrained(DiffusionPipeline, plan.ref.path)
    except (OSError, ValueError) as exc:
        raise RuntimeFailure(f"cannot load teacher {plan.config.teacher}: {str(exc).splitlines()[0]}") from None
    if not hasattr(pipe, "unet") or not hasattr(pipe, "text_encoder"):
        raise UsageError(
            f"{plan.config.teacher}: teacher has no UNet/text encoder; distill needs a text-to-image model"
        )
    pipe.set_progress_bar_config(disable=True)
    setattr(pipe, ORIGINAL_SCHEDULER, dict(pipe.scheduler.config))
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.requires_grad_(False).eval()
    pipe.to(device)
    return pipe


def lr_at(
    step: int, base: float, warmup: int, schedule: str = "constant", decay_from: int = 0, total: int = 1
) -> float:
    """Linear warm-up over WARMUP steps, then BASE (constant), or with 'linear' BASE falling linearly
    from step DECAY_FROM (the end of the warm-up or of the KD steps, whichever is later) to 0 at TOTAL."""
    lr = base * min(1.0, (step + 1) / max(1, warmup))
    start = max(decay_from, warmup)
    if schedule == "linear" and step >= start:
        lr *= max(0.0, (total - step) / max(1, total - start))
    return lr


class StopFlag:
    """First Ctrl-C (or SIGTERM): finish the current step, checkpoint, stop. Second: stop at once."""

    def __init__(self):
        self.set = False
        self.previous = None

    def __enter__(self):
        try:
            self.previous = {sig: signal.signal(sig, self._handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread
            self.previous = None
        return self

    def _handler(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        for sig, handler in (self.previous or {}).items():
            signal.signal(sig, handler)


def train(plan: Plan, events, accelerator=None) -> dict:
    """Run (or resume) the distillation described by PLAN; returns a summary. Main process exports."""
    from diffcli.training.distill import lcm
    from diffcli.training.distill.data import build_bank

    config = plan.config
    acc = accelerator or make_accelerator(config)
    main = acc.is_main_process
    ckpt = plan.ckpt
    fingerprint = run_fingerprint(config)
    acc.wait_for_everyone()  # every process has finished its checks before anything is written
    if main:
        if config.overwrite:
            C.clear(ckpt)
        C.write_run(ckpt, config, fingerprint)
    acc.wait_for_everyone()

    torch.manual_seed(config.seed)
    events.phase("load", teacher=plan.ref.name, device=str(acc.device), processes=acc.num_processes)
    pipe = load_teacher(plan, acc.device)
    # the bank is built once by the main process; the others wait and read it
    if acc.num_processes > 1:
        from diffcli.training.distill.data import predraw

        predraw(plan, pipe, acc.process_index, acc.num_processes, events)
        acc.wait_for_everyone()
    if main:
        bank = build_bank(plan, pipe, acc.device, events)
    acc.wait_for_everyone()
    if not main:
        bank = build_bank(plan, pipe, acc.device, events)
    _write_rank_file(ckpt, acc)

    student, target = lcm.make_student(
        pipe.unet, config.method, config.time_cond_dim, config.lora_rank, compact=config.student_unet == "compact"
    )
    student.to(acc.device)
    if target is not None:
        target.to(acc.device)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.learning_rate, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    gen, rng = lcm.new_generators(config.seed, acc.process_index)

    step, elapsed, loss_avg = 0, 0.0, None
    found = C.latest(ckpt) if config.resume else None
    if found:
        state, rng_state = C.load(found[1], acc.process_index)
        _load_trainable(student, state["student"], config.method)
        if target is not None:
            target.load_state_dict(state["target"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed, loss_avg = state["step"], state.get("elapsed", 0.0), state.get("loss_avg")
        if rng_state is not None:
            gen.set_state(rng_state["gen"])
            rng.setstate(rng_state["rng"])
        else:  # resumed with more processes than before: fresh, distinct streams per rank
            gen.manual_seed(config.seed * 7919 + acc.process_index * 104729 + step + 1)
        events.info(f"resumed from {found[1]} at step {step}")
    elif config.resume:
        events.warn(f"--resume: no checkpoint in {ckpt} yet; starting at step 0")
    total = config.max_train_steps
    if step > total:
        raise UsageError(f"--resume: the run is already at step {step}, past --max-train-steps {total}")

    wrapped, opt = acc.prepare(student, opt)
    step_fn = lcm.LCMStep(config, pipe, pipe.unet if target is not None else student, student, target, acc.device)
    warmup = min(100, max(1, total // 10))
    per_process = max(1, config.batch_size // acc.num_processes)
    events.start(
        steps=total,
        step=step,
        method=config.method,
        batch=per_process * acc.num_processes,
        processes=acc.num_processes,
        samples=len(bank),
        teacher=plan.ref.name,
    )
    emit_every = 1 if total <= 200 else 10
    t_start = time.time()
    last_saved = step if found else -1

    def save(at: int):
        nonlocal last_saved
        C.save_rng(ckpt, at, acc.process_index, gen, rng)
        acc.wait_for_everyone()
        if main:
            state = {
                "step": at,
                "elapsed": elapsed + time.time() - t_start,
                "loss_avg": loss_avg,
                "student": _trainable_state(acc.unwrap_model(wrapped), config.method),
                "target": target.state_dict() if target is not None else None,
                "optimizer": opt.state_dict(),
                "processes": acc.num_processes,
            }
            path = C.save_state(ckpt, at, state, keep=config.keep_checkpoints)
            events.checkpoint(at, str(path))
        acc.wait_for_everyone()
        last_saved = at

    tuner = _thread_tuner(acc)
    interrupted = False
    with StopFlag() as stop:
        while step < total:
            if tuner is not None:
                tuner.step()
            lr = lr_at(step, config.learning_rate, warmup, config.lr_schedule, config.kd_steps, total)
            for g in opt.param_groups:
                g["lr"] = lr
            for _ in range(config.gradient_accumulation_steps):
                z0, captions = bank.sample(per_process, gen, rng)
                with acc.accumulate(wrapped):
                    loss = step_fn(wrapped, z0, captions, gen, acc.autocast, kd=step < config.kd_steps)
                    acc.backward(loss)
                    if acc.sync_gradients:
                        acc.clip_grad_norm_(params, 1.0)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
            if target is not None:  # a copy, not an average, while KD brings the student up
                lcm.ema_update(target, acc.unwrap_model(wrapped), config.ema_decay if step >= config.kd_steps else 0.0)
            step += 1
            both = acc.gather(
                torch.stack(
                    [loss.detach().float().reshape(()), torch.tensor(float(stop.set), device=loss.device)]
                ).reshape(1, 2)
            )
            value, stop_any = both[:, 0].mean().item(), bool(both[:, 1].max().item() > 0)
            if not torch.isfinite(torch.tensor(value)):
                raise RuntimeFailure(f"the loss became {value} at step {step}; try a lower --learning-rate")
            loss_avg = value if loss_avg is None else 0.9 * loss_avg + 0.1 * value
            events.train(step, total, loss_avg, lr, emit=(step % emit_every == 0 or step == total))
            if step % config.checkpoint_every == 0 and step < total:
                save(step)
            if stop_any:  # every process stops after the same step
                interrupted = True
                break
    if step != last_saved:
        save(step)
    events.close()
    if interrupted:
        events.info(f"interrupted at step {step}; continue with --resume")
        raise KeyboardInterrupt
    summary = {
        "steps": step,
        "loss": round(loss_avg, 6) if loss_avg is not None else None,
        "train_s": round(elapsed + time.time() - t_start, 1),
        "processes": acc.num_processes,
        "steps_per_s": round(events.rate(step), 3) if events.t0 else None,
    }
    if main:
        from diffcli.distill.student import export

        written = export(plan, pipe, acc.unwrap_model(wrapped), target, fingerprint, summary)
        events.saved(str(written), "lora" if config.method == "lcm-lora" else "model")
    acc.wait_for_everyone()
    return summary


def _thread_tuner(acc):
    """On a shared CPU, pick 1 or N torch threads by timing both now and then (training.common's tuner)."""
    if acc.device.type != "cpu" or acc.num_processes > 1 or torch.get_num_threads() < 2:
        return None
    from diffcli.training.common import ThreadTuner

    return ThreadTuner(torch.get_num_threads())


def _write_rank_file(ckpt: Path, acc) -> None:
    """Each process notes itself: proof (and a log) of how many processes ran."""
    import json

    (ckpt / f"rank-{acc.process_index}.json").write_text(
        json.dumps(
            {
                "rank": acc.process_index,
                "world_size": acc.num_processes,
                "pid": os.getpid(),
                "distributed_type": str(acc.distributed_type),
                "device": str(acc.device),
            }
        )
        + "\n"
    )


def _trainable_state(student, method: str) -> dict:
    if method == "lcm-lora":
        from peft.utils import get_peft_model_state_dict

        return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(student).items()}
    return {k: v.detach().cpu().clone() for k, v in student.state_dict().items()}


def _load_trainable(student, state: dict, method: str) -> None:
    if method == "lcm-lora":
        from peft.utils import set_peft_model_state_dict

        set_peft_model_state_dict(student, state)
    else:
        student.load_state_dict(state)

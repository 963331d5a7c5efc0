"""Timestep shift (`--shift`): move a sampler's steps toward the clean or the noisy end.

With few steps, where the steps fall matters as much as how many there are. A shift s maps each
timestep of the sampler's own schedule, as a fraction u = (t + 1) / T of the training schedule, to
u' = s·u / (1 + (s - 1)·u) — the shift of the SD3 and Flux samplers (Esser et al. 2024), applied to
discrete timesteps — and snaps it to the nearest timestep the model was trained on (for an LCM
student, its distillation grid). A step at the very end of the schedule (u = 1) stays there; s < 1
moves the others toward the clean end, s > 1 toward the noisy end, s = 1 changes nothing.

The shifted steps reach the pipeline as its `timesteps` argument, so only samplers whose
`set_timesteps` takes custom timesteps (and do not space them by Karras sigmas) can be shifted.
"""

from __future__ import annotations

from diffcli.errors import UsageError

MAX_SHIFT = 10.0


def check_shift(shift: float | None, name: str = "--shift") -> None:
    """A usage error when SHIFT is out of range; NAME says where the value came from."""
    if shift is not None and not 0 < shift <= MAX_SHIFT:
        raise UsageError(f"{name} must be in (0, {MAX_SHIFT:g}] (got {shift})")


def check_sampler(name: str | None, shift: float | None) -> None:
    """A usage error when SHIFT moves the steps of a sampler that cannot take custom timesteps."""
    if not shift or shift == 1.0 or name is None:
        return
    from diffcli.schedulers import SCHEDULERS, spec

    if not spec(name).custom_timesteps:
        able = ", ".join(n for n, s in SCHEDULERS.items() if s.custom_timesteps)
        raise UsageError(
            f"--shift {shift:g} does not work with the '{name}' sampler, which cannot take custom "
            f"timesteps; use one of: {able}"
        )


def shift_fraction(u: float, shift: float) -> float:
    return shift * u / (1 + (shift - 1) * u)


def _grid(scheduler) -> list[int]:
    """The timesteps the model was trained on, ascending: an LCM student's distillation grid, else all."""
    config = scheduler.config
    total = int(config.num_train_timesteps)
    original = config.get("original_inference_steps")
    if type(scheduler).__name__ in ("LCMScheduler", "TCDScheduler") and original:
        ratio = total // int(original)
        return [k * ratio - 1 for k in range(1, int(original) + 1)]
    return list(range(total))


def shifted(scheduler, steps: int, shift: float) -> list[int]:
    """The sampler's STEPS timesteps, shifted by SHIFT and snapped to its grid (strictly decreasing)."""
    import bisect
    import inspect

    if "timesteps" not in inspect.signature(scheduler.set_timesteps).parameters:
        raise UsageError(
            f"--shift does not work with this model's sampler ({type(scheduler).__name__}); choose one with --scheduler"
        )
    scheduler.set_timesteps(steps, device="cpu")
    total = int(scheduler.config.num_train_timesteps)
    grid = _grid(scheduler)
    out: list[int] = []
    for t in scheduler.timesteps.tolist():
        target = shift_fraction((float(t) + 1) / total, shift) * total - 1
        i = min(range(len(grid)), key=lambda k: abs(grid[k] - target))
        if out and grid[i] >= out[-1]:  # two steps on one grid point: take the next one down
            i = bisect.bisect_left(grid, out[-1]) - 1
            if i < 0:
                break
        out.append(grid[i])
    return out


def flow_sigmas(pipe, steps: int, shift: float) -> list[float]:
    """A flow-matching pipeline's STEPS sigmas before its scheduler shifts them (as the pipeline would
    choose them, Family.base_sigmas: FLUX passes linspace(1, 1/steps), SD 3.x leaves them to the scheduler),
    shifted by SHIFT.
    The scheduler then applies the model's own shift on top; shifts compose by multiplying, so SHIFT s
    on a model with shift m samples as shift s·m (FLUX: s·e^mu of its resolution-dependent mu)."""
    return [shift_fraction(float(u), shift) for u in _base_sigmas(pipe, steps)]


def pipeline_sigmas(pipe) -> list[float] | None:
    """The sigmas a pipeline's own config ships (`sample_sigmas`: Qwen-Image 2.1's step-distilled releases), which
    its call samples on when given none, whatever its step count; None where it ships none."""
    own = getattr(pipe, "config", {}).get("sample_sigmas")
    return [float(u) for u in own] if own else None


def _base_sigmas(pipe, steps: int) -> list[float]:
    """The STEPS sigmas the pipeline samples on before its scheduler shifts them: its config's own when there are
    STEPS of them, else its family's choice (FLUX.1: linspace), else the scheduler's range."""
    import numpy as np

    from diffcli import families

    own = pipeline_sigmas(pipe)
    if own and len(own) == steps:
        return own
    family = families.family_of_pipe(pipe)
    if family is not None and family.base_sigmas is not None:  # the pipeline's own choice (FLUX.1: linspace)
        return family.base_sigmas(steps)
    return [float(u) for u in np.linspace(pipe.scheduler.sigma_max, pipe.scheduler.sigma_min, steps)]


def is_flow(scheduler) -> bool:
    return type(scheduler).__name__.startswith("FlowMatch")


def schedule_kwargs(pipe, steps: int, shift: float | None) -> dict:
    """The pipeline's step arguments: the step count, and the shifted timesteps (flow-matching
    schedulers: sigmas) when SHIFT is not 1."""
    if not shift or shift == 1.0:
        own = pipeline_sigmas(pipe)
        if own and len(own) != steps:  # the pipeline would sample on its own sigmas, whatever the step count
            return {"num_inference_steps": steps, "sigmas": _base_sigmas(pipe, steps)}
        return {"num_inference_steps": steps}
    if is_flow(pipe.scheduler):
        return {"num_inference_steps": steps, "sigmas": flow_sigmas(pipe, steps, shift)}
    timesteps = shifted(pipe.scheduler, steps, shift)
    return {"num_inference_steps": len(timesteps), "timesteps": timesteps}


def set_schedule(pipe, steps: int, shift: float | None) -> int:
    """Set the pipeline's scheduler to the schedule a call with these arguments uses; returns its length."""
    kwargs = schedule_kwargs(pipe, steps, shift)
    if "sigmas" in kwargs:
        pipe.scheduler.set_timesteps(sigmas=kwargs["sigmas"], device="cpu")
    elif "timesteps" in kwargs:
        pipe.scheduler.set_timesteps(timesteps=kwargs["timesteps"], device="cpu")
    else:
        pipe.scheduler.set_timesteps(steps, device="cpu")
    return kwargs["num_inference_steps"]


def fewest_steps(strength: float) -> int:
    """The fewest steps at which img2img at STRENGTH runs one (int(steps x strength) >= 1, as diffusers counts)."""
    import math

    steps = max(1, math.ceil(1 / strength))
    while int(steps * strength) < 1:  # float rounding: 1 / strength can land just below the true count
        steps += 1
    return steps


def _unet_steps(steps: int, strength: float) -> int:
    """The steps a UNet img2img-like call at STRENGTH runs of STEPS (diffusers' get_timesteps)."""
    return min(int(steps * strength), steps)


def denoising_steps(job, flow: bool) -> int:
    """The denoising steps a job's pipeline call runs: --steps, or for img2img-like tasks the part
    --strength keeps (diffusers' get_timesteps: int(steps x strength); flow-matching pipelines keep
    steps - int(steps - steps x strength))."""
    if job.task == "txt2img" or job.strength is None:
        return job.steps
    if flow:
        return job.steps - int(max(job.steps - job.steps * job.strength, 0))
    return _unet_steps(job.steps, job.strength)


def check_denoising_steps(job, flow: bool) -> None:
    """A usage error when an img2img or inpaint JOB would run no denoising step: a UNet pipeline runs
    int(steps x strength) of them (diffusers' get_timesteps), so --steps 1 at --strength 0.5 runs none and
    the pipeline fails; flow-matching pipelines (FLOW) keep at least one step for any strength above 0. The
    same for the hires fix's img2img pass (--hires-steps, else --steps, at --hires-strength)."""
    if flow or job.steps is None:
        return
    if job.task == "txt2img" and job.hires_strength is not None:
        steps, strength = job.hires_steps or job.steps, job.hires_strength
        what = f"the hires pass at --hires-strength {strength:g} runs no denoising step of {steps}"
        fix = f"--hires-steps {fewest_steps(strength)}"
    elif job.task in ("img2img", "inpaint") and job.strength is not None:
        steps, strength = job.steps, job.strength
        what = f"--steps {steps} at --strength {strength:g} runs no denoising step"
        fix = f"--steps {fewest_steps(strength)}"
    else:
        return
    if _unet_steps(steps, strength) < 1:
        raise UsageError(f"{what}; use {fix} or more")

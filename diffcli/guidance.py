"""Classifier-free guidance limited to the noisy part of the schedule (`--cfg-cutoff`).

Guidance settles layout and attributes while the image is still mostly noise. Near the end of the
schedule it adds little to adherence, costs a second UNet pass per step, and in img2img at low
strength it overrides the input image instead of refining it (Kynkäänniemi et al. 2024, "Applying
guidance in a limited interval"). With cutoff c, guidance runs only on steps whose timestep is at
least c × num_train_timesteps. From the first step below that, the pipeline runs the conditional
branch alone. c = 0 guides every step, as plain diffusers does.

This works through the pipelines' own `callback_on_step_end`: every tensor the pipeline doubled for
guidance (prompt embeddings, SDXL's added conditions, an inpainting model's mask latents) keeps its
conditional half, and `_guidance_scale` drops to 1 — the approach of diffusers' SDCFGCutoffCallback.
"""

from __future__ import annotations

from diffcli.errors import UsageError


def check_cutoff(cutoff: float | None, name: str = "--cfg-cutoff") -> None:
    """A usage error when CUTOFF is out of [0, 1); NAME says where the value came from."""
    if cutoff is not None and not 0 <= cutoff < 1:
        raise UsageError(f"{name} must be in [0, 1) (got {cutoff})")


def threshold(pipe, cutoff: float) -> float:
    """The lowest timestep that is still guided."""
    return cutoff * pipe.scheduler.config.num_train_timesteps


def first_timestep(pipe, steps: int, strength: float | None, shift: float | None = None) -> float:
    """The timestep of the first denoising step (later than 999 only for txt2img)."""
    from diffcli import timesteps as schedule

    steps = schedule.set_schedule(pipe, steps, shift)
    timesteps = pipe.scheduler.timesteps
    if strength is not None and hasattr(pipe, "get_timesteps"):  # img2img / inpaint start part-way down
        timesteps, _ = pipe.get_timesteps(steps, strength, "cpu")
    return float(timesteps[0]) if len(timesteps) else 0.0


def starts_unguided(pipe, cutoff: float, steps: int, strength: float | None, shift: float | None = None) -> bool:
    """True when even the first step is below the cutoff (img2img at a low strength)."""
    return cutoff > 0 and first_timestep(pipe, steps, strength, shift) < threshold(pipe, cutoff)


def tensor_inputs(pipe) -> list[str]:
    """The tensors the step callback needs to see (all the pipeline offers, latents first)."""
    offered = list(getattr(pipe, "_callback_tensor_inputs", ["latents"]))
    return ["latents"] + [name for name in offered if name != "latents"]


def stop_guidance_if_due(pipe, timestep, callback_kwargs: dict, cutoff: float) -> dict:
    """Called after each step: switch guidance off when the next step falls below the cutoff."""
    if cutoff <= 0 or not getattr(pipe, "do_classifier_free_guidance", False):
        return callback_kwargs
    timesteps = pipe.scheduler.timesteps
    later = timesteps[timesteps < timestep]
    if len(later) and float(later.max()) >= threshold(pipe, cutoff):
        return callback_kwargs
    latents = callback_kwargs["latents"]
    for name, value in list(callback_kwargs.items()):
        if name != "latents" and hasattr(value, "shape") and value.shape[:1] == (2 * latents.shape[0],):
            callback_kwargs[name] = value.chunk(2)[-1]  # [unconditional, conditional] -> conditional
        elif (
            isinstance(value, list)
            and value
            and all(  # several ControlNets: one control image each
                hasattr(v, "shape") and v.shape[:1] == (2 * latents.shape[0],) for v in value
            )
        ):
            callback_kwargs[name] = [v.chunk(2)[-1] for v in value]
    pipe._guidance_scale = 1.0
    return callback_kwargs


def cfg_argument(pipe) -> str:
    """The keyword of PIPE's call that takes --cfg: that of the family whose pipeline PIPE is
    (Family.cfg_argument; Qwen-Image: true_cfg_scale), else guidance_scale."""
    from diffcli import families

    family = families.family_of_pipe(pipe)
    return family.cfg_argument if family is not None else "guidance_scale"


def pipeline_kwargs(
    pipe,
    cfg: float,
    cutoff: float | None,
    steps: int,
    strength: float | None = None,
    on_step=None,
    shift: float | None = None,
) -> dict:
    """The guidance scale (under the keyword cfg_argument names) and the step callback for one pipeline
    call (its steps shifted by SHIFT, see diffcli.timesteps); ON_STEP(pipe, i, t, kwargs) runs first."""
    cutoff = cutoff or 0.0

    def callback(p, step_index, timestep, callback_kwargs):
        if on_step is not None:
            on_step(p, step_index, timestep, callback_kwargs)
        return stop_guidance_if_due(p, timestep, callback_kwargs, cutoff)

    return {
        cfg_argument(pipe): 1.0 if starts_unguided(pipe, cutoff, steps, strength, shift) else cfg,
        "callback_on_step_end": callback,
        "callback_on_step_end_tensor_inputs": tensor_inputs(pipe),
    }

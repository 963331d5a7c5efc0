"""The sampler table: a name users type ▸ a diffusers scheduler built from the model's own config.

Listing names needs no torch; `build` imports diffusers only when a model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diffcli.errors import UsageError

# the attribute of a built pipeline that keeps its model's own scheduler config: `build` starts from it, so a
# sampler chosen for one job does not become the next job's starting point
ORIGINAL_SCHEDULER = "_diffcli_scheduler_config"


@dataclass(frozen=True)
class SchedulerSpec:
    name: str
    cls: str  # diffusers class name
    a1111: str  # the sampler name AUTOMATIC1111 writes into `parameters`
    summary: str
    options: dict = field(default_factory=dict)
    custom_timesteps: bool = False  # takes a list of timesteps, so `--shift` can move its steps
    flow: bool = False  # a flow-matching sampler (SD 3.x, FLUX.1); the others are for SD 1.x/2.x/SDXL

    @property
    def applies_to(self) -> str:
        """The model families this sampler works with, in words."""
        return "sd3, flux" if self.flow else "sd1, sd2, sdxl"


# Every toggle that some entry sets is set explicitly by the others sharing its class, so the
# result never depends on which sampler the model's config was saved with.
_DPM = {"use_karras_sigmas": False, "algorithm_type": "dpmsolver++", "solver_order": 2}
SCHEDULERS: dict[str, SchedulerSpec] = {
    s.name: s
    for s in [
        SchedulerSpec("ddim", "DDIMScheduler", "DDIM", "DDIM (Song et al. 2020), deterministic"),
        SchedulerSpec(
            "ddpm",
            "DDPMScheduler",
            "DDPM",
            "DDPM ancestral sampling (Ho et al. 2020); needs many steps",
            custom_timesteps=True,
        ),
        SchedulerSpec("pndm", "PNDMScheduler", "PLMS", "PNDM / PLMS (Liu et al. 2022)", {"skip_prk_steps": True}),
        SchedulerSpec(
            "lms", "LMSDiscreteScheduler", "LMS", "linear multistep (k-diffusion)", {"use_karras_sigmas": False}
        ),
        SchedulerSpec(
            "lms-karras",
            "LMSDiscreteScheduler",
            "LMS Karras",
            "linear multistep, Karras sigmas",
            {"use_karras_sigmas": True},
        ),
        SchedulerSpec(
            "euler", "EulerDiscreteScheduler", "Euler", "Euler (Karras et al. 2022)", {"use_karras_sigmas": False}, True
        ),
        SchedulerSpec(
            "euler-karras",
            "EulerDiscreteScheduler",
            "Euler Karras",
            "Euler, Karras sigmas",
            {"use_karras_sigmas": True},
        ),
        SchedulerSpec("euler-a", "EulerAncestralDiscreteScheduler", "Euler a", "Euler ancestral; stochastic"),
        SchedulerSpec(
            "heun",
            "HeunDiscreteScheduler",
            "Heun",
            "Heun 2nd order; two model calls per step",
            {"use_karras_sigmas": False},
            True,
        ),
        SchedulerSpec(
            "dpm++2m", "DPMSolverMultistepScheduler", "DPM++ 2M", "DPM-Solver++(2M) (Lu et al. 2022)", _DPM, True
        ),
        SchedulerSpec(
            "dpm++2m-karras",
            "DPMSolverMultistepScheduler",
            "DPM++ 2M Karras",
            "DPM-Solver++(2M), Karras sigmas",
            {**_DPM, "use_karras_sigmas": True},
        ),
        SchedulerSpec(
            "dpm++2m-sde-karras",
            "DPMSolverMultistepScheduler",
            "DPM++ 2M SDE Karras",
            "SDE variant of DPM-Solver++(2M), Karras sigmas; stochastic",
            {**_DPM, "use_karras_sigmas": True, "algorithm_type": "sde-dpmsolver++"},
        ),
        SchedulerSpec(
            "unipc", "UniPCMultistepScheduler", "UniPC", "UniPC (Zhao et al. 2023)", {"use_karras_sigmas": False}
        ),
        SchedulerSpec(
            "deis", "DEISMultistepScheduler", "DEIS", "DEIS (Zhang & Chen 2022)", {"use_karras_sigmas": False}
        ),
        SchedulerSpec(
            "lcm",
            "LCMScheduler",
            "LCM",
            "latent consistency models; 1-8 steps with distilled models",
            custom_timesteps=True,
        ),
        SchedulerSpec(
            "flow-euler",
            "FlowMatchEulerDiscreteScheduler",
            "Euler",
            "flow-matching Euler (Esser et al. 2024); SD 3.x and FLUX.1",
            custom_timesteps=True,
            flow=True,
        ),
    ]
}


def spec(name: str) -> SchedulerSpec:
    """The table entry for NAME, or a usage error listing the valid names."""
    try:
        return SCHEDULERS[name.lower()]
    except KeyError:
        raise UsageError(f"unknown scheduler '{name}'; choose one of: {', '.join(SCHEDULERS)}") from None


def _kind(flow: bool) -> str:
    return "a flow-matching model (SD 3.x / FLUX.1)" if flow else "not a flow-matching model"


def check_applies(name: str, flow: bool, model: str) -> None:
    """A usage error when sampler NAME does not fit MODEL: flow-matching models (SD 3.x, FLUX.1) take
    only flow-matching samplers, the others none of them."""
    if spec(name).flow == flow:
        return
    able = ", ".join(n for n, s in SCHEDULERS.items() if s.flow == flow)
    raise UsageError(f"scheduler '{name}' does not apply to {model}, which is {_kind(flow)}; use one of: {able}")


def by_a1111_name(name: str, flow: bool, model: str) -> str:
    """The sampler that NAME's AUTOMATIC1111 name means on MODEL (FLOW: a flow-matching model): NAME when
    it fits, else the entry of the same A1111 name that does, as A1111/Forge read their names ("Euler" is
    euler on SD 1.x/2.x/SDXL and flow-euler on SD 3.x / FLUX.1). A usage error, in A1111's names, when
    no entry of that name fits."""
    entry = spec(name)
    if entry.flow == flow:
        return entry.name
    for other in SCHEDULERS.values():
        if other.a1111 == entry.a1111 and other.flow == flow:
            return other.name
    able = ", ".join(dict.fromkeys(s.a1111 for s in SCHEDULERS.values() if s.flow == flow))
    raise UsageError(f"sampler '{entry.a1111}' does not apply to {model}, which is {_kind(flow)}; use one of: {able}")


def build(name: str, model_config):
    """A fresh scheduler NAME configured from the model's own scheduler config."""
    import diffusers

    entry = spec(name)
    cls = getattr(diffusers, entry.cls)
    return cls.from_config(dict(model_config), **entry.options)


def ignores_zero_snr(name: str, model_config) -> bool:
    """True when the model was trained with zero terminal SNR but NAME's class cannot follow that schedule."""
    if not dict(model_config).get("rescale_betas_zero_snr"):
        return False
    import inspect

    import diffusers

    cls = getattr(diffusers, spec(name).cls)
    return "rescale_betas_zero_snr" not in inspect.signature(cls.__init__).parameters


def zero_snr_names() -> list[str]:
    """The sampler names that follow a zero-terminal-SNR schedule (imports diffusers)."""
    return [n for n in SCHEDULERS if not ignores_zero_snr(n, {"rescale_betas_zero_snr": True})]

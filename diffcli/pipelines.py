"""Loading models and building task pipelines; each model's components are loaded once per process.

txt2img, img2img and inpaint pipelines of one model share the same modules through `from_pipe`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from diffcli.errors import RuntimeFailure, UsageError

_BASES: dict[tuple, object] = {}
_TASKS: dict[tuple, object] = {}
ORIGINAL_SCHEDULER = "_diffcli_scheduler_config"


@dataclass(frozen=True)
class LoadOptions:
    allow_pickle: bool = False
    offload: str | None = None  # None | "model" | "sequential"
    vae_tiling: bool = False
    attention_slicing: bool = False


def prepare_libraries() -> None:
    """Once per process before a model loads: quiet libraries (our progress replaces their bars and
    info logs) and attention processors that don't re-read their own signature on every call."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    _cache_processor_signatures()


def _cache_processor_signatures() -> None:
    """diffusers' Attention.forward calls inspect.signature(processor.__call__) on every call, ~80 µs:
    about 1 ms of a small UNet's 16 ms on a CPU (14 attention calls per step for the bundled model).
    inspect.signature returns a function's __signature__ when it has one, so giving each processor's
    __call__ its own (unchanged) signature once makes that lookup free; nothing else changes."""
    import inspect

    from diffusers.models import attention_processor

    for obj in vars(attention_processor).values():
        call = getattr(obj, "__call__", None) if isinstance(obj, type) else None
        if inspect.isfunction(call) and not hasattr(call, "__signature__"):
            call.__signature__ = inspect.signature(call)


def _key(ref, choice, options: LoadOptions) -> tuple:
    return (str(ref.path), ref.kind, str(getattr(ref, "lora", None)), choice.device, choice.dtype, options)


def is_loaded(ref, choice, options: LoadOptions = LoadOptions()) -> bool:
    """Whether load_base would reuse a pipeline this process already holds."""
    return _key(ref, choice, options) in _BASES


def load_base(ref, choice, options: LoadOptions = LoadOptions(), warn=lambda msg: None):
    """The model's own pipeline (as its model_index says), loaded once per process."""
    lora = getattr(ref, "lora", None)
    key = _key(ref, choice, options)
    if key in _BASES:
        return _BASES[key]
    import torch  # noqa: F401 - make the import cost visible here, not in a callee
    from diffusers import DiffusionPipeline

    from diffcli.device import torch_dtype

    prepare_libraries()
    dtype = torch_dtype(choice.dtype)
    try:
        if ref.kind == "single_file":
            from diffcli.models.single_file import load_pipeline

            pipe = load_pipeline(ref, dtype, options.allow_pickle)
        else:
            with warnings.catch_warnings():  # `torch_dtype` is renamed `dtype` in newer diffusers
                warnings.simplefilter("ignore", FutureWarning)
                pipe = DiffusionPipeline.from_pretrained(
                    str(ref.path),
                    torch_dtype=dtype,
                    use_safetensors=not options.allow_pickle,
                    local_files_only=True,
                    variant=getattr(ref, "variant", None),
                )
    except (OSError, ValueError, EnvironmentError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "safetensors" in text and not options.allow_pickle:
            raise UsageError(
                f"{ref.name}: no safetensors weights; pickle weights are refused unless --allow-pickle"
            ) from None
        raise RuntimeFailure(f"cannot load model {ref.name}: {text}") from None
    if lora is not None:
        _apply_lora(pipe, ref)
    pipe.set_progress_bar_config(disable=True)
    setattr(pipe, ORIGINAL_SCHEDULER, dict(pipe.scheduler.config))
    _apply_memory_options(pipe, choice, options, warn)
    _BASES[key] = pipe
    return pipe


def _apply_lora(pipe, ref) -> None:
    from diffcli.models.lora import apply_lora

    try:
        apply_lora(pipe, ref.lora, fuse=True)
    except ImportError as exc:
        raise RuntimeFailure(f"{ref.name}: loading a LoRA needs peft ({exc}); pip install peft") from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RuntimeFailure(f"{ref.name}: the LoRA does not fit its base model: {text}") from None


def _apply_memory_options(pipe, choice, options: LoadOptions, warn) -> None:
    if options.attention_slicing:
        pipe.enable_attention_slicing()
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    if options.offload and choice.device == "cpu":
        warn(f"--offload {options.offload} has no effect on CPU; ignored")
    elif options.offload == "model":
        pipe.enable_model_cpu_offload(device=choice.device)
        return
    elif options.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=choice.device)
        return
    pipe.to(choice.device)


def task_pipeline(base, task: str):
    """The pipeline for TASK sharing BASE's loaded components (never loads weights again)."""
    key = (id(base), task)
    if key in _TASKS:
        return _TASKS[key]
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

    auto = {"txt2img": AutoPipelineForText2Image, "img2img": AutoPipelineForImage2Image, "inpaint": AutoPipelineForInpainting}
    try:
        pipe = auto[task].from_pipe(base)
    except ValueError as exc:
        raise UsageError(f"this model cannot do {task}: {exc}") from None
    pipe.set_progress_bar_config(disable=True)
    setattr(pipe, ORIGINAL_SCHEDULER, getattr(base, ORIGINAL_SCHEDULER))
    _TASKS[key] = pipe
    return pipe


def set_scheduler(pipe, name: str) -> None:
    """Install a fresh scheduler NAME configured from the model's original scheduler config."""
    from diffcli.schedulers import build

    pipe.scheduler = build(name, getattr(pipe, ORIGINAL_SCHEDULER, pipe.scheduler.config))


def decode_latents(pipe, latents):
    """Latents to PIL images (used for --save-partial)."""
    import torch

    with torch.no_grad():
        vae = pipe.vae
        scaled = latents.to(vae.dtype) / vae.config.scaling_factor
        images = vae.decode(scaled, return_dict=False)[0]
    return pipe.image_processor.postprocess(images, output_type="pil")


def release_models() -> None:
    """Forget every loaded pipeline, so its memory can go (batch: a model no longer needed)."""
    import gc

    _BASES.clear()
    _TASKS.clear()
    gc.collect()

"""Loading models and building task pipelines; each model's components are loaded once per process.

txt2img, img2img and inpaint pipelines of one model share the same modules through `from_pipe`.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from diffcli import loading, schema
from diffcli.errors import RuntimeFailure, UsageError
from diffcli.schedulers import ORIGINAL_SCHEDULER

_BASES: dict[tuple, object] = {}
_TASKS: dict[tuple, object] = {}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class LoadOptions:
    """How a model loads; a request to a server may set the fields not declared schema.LOCAL."""

    allow_pickle: bool = False
    offload: str | None = field(default=None, metadata=schema.meta(choices=("model", "sequential")))
    vae_tiling: bool = False
    attention_slicing: bool = False
    # the job's --quantize (diffcli.quantize), for diffusers-layout models
    quantize: str | None = field(default=None, metadata=schema.LOCAL)
    # torch.compile the denoiser (batch, serve: --compile; a server decides it); not a Job field: compile_denoiser
    compile: bool = field(default=False, metadata=schema.LOCAL)


def prepare_libraries() -> None:
    """Once per process before a model loads: quiet libraries (our progress replaces their bars and
    info logs) and attention processors that don't re-read their own signature on every call.
    Where torchao is installed (`diffcli[torchao]`), diffusers imports it with every model it loads; its
    notes on CUDA kernels it cannot load, torch's on the enums it registers and diffusers' on torchao
    internals it misses are silenced (errors still show)."""
    for name in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao"):
        logging.getLogger(name).setLevel(logging.ERROR)
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


def options_for(job, options: LoadOptions) -> LoadOptions:
    """The load options of JOB: the run's, with the job's --quantize (a Job field, as it decides pixels)."""
    from dataclasses import replace

    quantize = getattr(job, "quantize", None)
    return replace(options, quantize=quantize) if quantize not in (None, "none") else options


def key_of(ref, choice, options: LoadOptions = LoadOptions()) -> tuple:
    """The cache key of a loaded pipeline: (model path, kind, LoRA, device, dtype, load options)."""
    return (
        str(ref.path),
        ref.kind,
        str(getattr(ref, "lora", None)),
        choice.device,
        choice.dtype,
        options,
        str(getattr(ref, "base", None)),
    )


def is_loaded(ref, choice, options: LoadOptions = LoadOptions()) -> bool:
    """Whether load_base would reuse a pipeline this process already holds."""
    return key_of(ref, choice, options) in _BASES


def load_base(ref, choice, options: LoadOptions = LoadOptions(), warn=lambda msg: None):
    """The model's own pipeline (as its model_index says), loaded once per process."""
    lora = getattr(ref, "lora", None)
    key = key_of(ref, choice, options)
    if key in _BASES:
        return _BASES[key]
    import torch  # noqa: F401 - make the import cost visible here, not in a callee

    prepare_libraries()  # before diffusers' pipelines import (they import torchao where it is installed)
    from diffusers import DiffusionPipeline
    from safetensors import SafetensorError

    from diffcli.device import torch_dtype

    dtype = torch_dtype(choice.dtype)
    pickled: list[str] = []  # components without safetensors that --allow-pickle lets load
    try:
        if ref.kind == "single_file":
            from diffcli.models.single_file import load_pipeline

            pipe = load_pipeline(ref, dtype, options.allow_pickle)
        elif ref.kind == "transformer_file":
            from diffcli.models.single_file import load_with_base

            pipe = load_with_base(ref, dtype)
        else:
            pickled = pickle_only_components(ref.path) if options.allow_pickle else []
            # diffusers logs an error line for each component it then loads from pickle: we say it once
            with warnings.catch_warnings(), _diffusers_log_level(logging.CRITICAL if pickled else None):
                warnings.simplefilter("ignore", FutureWarning)  # `torch_dtype` is renamed `dtype` in newer diffusers
                pipe = loading.from_pretrained(
                    DiffusionPipeline,
                    str(ref.path),
                    torch_dtype=dtype,
                    # safetensors are always preferred; --allow-pickle only lets a component that has none
                    # load its pickle weights (None: per component, safetensors if present, else pickle)
                    use_safetensors=None if options.allow_pickle else True,
                    local_files_only=True,
                    variant=getattr(ref, "variant", None),
                    **_quantization(ref, options, dtype, choice),
                )
    except (OSError, ValueError, SafetensorError) as exc:  # transformers lets SafetensorError through
        raise _load_error(ref, exc, options.allow_pickle) from None
    if pickled:
        warn(f"{ref.name}: {', '.join(pickled)} loaded from pickle weights (no safetensors there; --allow-pickle)")
    if lora is not None:
        _apply_lora(pipe, ref)
    pipe.set_progress_bar_config(disable=True)
    setattr(pipe, ORIGINAL_SCHEDULER, dict(pipe.scheduler.config))
    _apply_memory_options(pipe, choice, options, warn)
    if options.compile:
        compile_denoiser(pipe, choice.device, choice.dtype)
    _BASES[key] = pipe
    return pipe


def _quantization(ref, options: LoadOptions, dtype, choice) -> dict:
    """from_pretrained's quantization_config for --quantize (diffcli.quantize), else nothing."""
    if options.quantize in (None, "none"):
        return {}
    from diffcli.quantize import pipeline_config

    denoiser = "transformer" if (Path(ref.path) / "transformer").is_dir() else "unet"
    return {"quantization_config": pipeline_config(options.quantize, denoiser, dtype, choice.device)}


@contextmanager
def _diffusers_log_level(level):
    """diffusers' log level set to LEVEL (None: left alone) for the duration."""
    if level is None:
        yield
        return
    from diffusers.utils import logging as dlogging

    before = dlogging.get_verbosity()
    dlogging.set_verbosity(level)
    try:
        yield
    finally:
        dlogging.set_verbosity(before)


def _load_error(ref, exc: Exception, allow_pickle: bool):
    """The one-line error for a diffusers folder that failed to load: a damaged weights file is named
    (with how to get it again), a folder without safetensors says so, anything else is passed on."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    root = Path(ref.path)
    damaged = damaged_safetensors(root)
    if damaged:
        named = [d for d in damaged if str(root / d[0]) in str(exc) or d[0] in str(exc)]
        rel, why = (named or damaged)[0]
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        return RuntimeFailure(f"{ref.name}: damaged weights file {rel}{more}: {why}; {_get_again(ref)}")
    if not allow_pickle and root.is_dir() and pickle_only_components(root):
        return UsageError(f"{ref.name}: no safetensors weights; pickle weights are refused unless --allow-pickle")
    return RuntimeFailure(f"cannot load model {ref.name}: {text}")


def _get_again(ref) -> str:
    if ref.source in ("hub", "url"):
        return f"run `diffcli models verify {ref.name} --repair` to fetch it again"
    if ref.source == "bundled":
        return f"`diffcli models verify {ref.name}` checks every shipped file; reinstall diffcli to restore them"
    return "replace it with an intact copy (copy or download it again)"


def damaged_safetensors(root) -> list[tuple[str, str]]:
    """(path relative to ROOT, what is wrong) for each .safetensors file under ROOT that safetensors
    cannot open: a header that does not parse, or a size other than the header describes (truncated,
    or bytes appended). Reads headers only. A flipped byte inside tensor data is not seen here; that
    takes the recorded hashes of `diffcli models verify`."""
    from safetensors import SafetensorError, safe_open

    root = Path(root)
    found = []
    for path in sorted(root.rglob("*.safetensors")) if root.is_dir() else [root]:
        try:
            with safe_open(str(path), framework="np"):
                pass
        except (SafetensorError, OSError) as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            why = why.removeprefix("Error while deserializing header: ")
            found.append((path.relative_to(root).as_posix() if path != root else path.name, why))
    return found


def pickle_only_components(root) -> list[str]:
    """Component folders of ROOT with pickle weights (.bin/.pt/.pth/.ckpt) but no .safetensors."""
    out = []
    for comp in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        files = [f.name for f in comp.iterdir() if f.is_file()]
        if not any(f.endswith(".safetensors") for f in files) and any(f.endswith(PICKLE_SUFFIXES) for f in files):
            out.append(comp.name)
    return out


def _apply_lora(pipe, ref) -> None:
    from diffcli.models.lora import apply_lora

    try:
        apply_lora(pipe, ref.lora, fuse=True)
        pipe.unload_lora_weights()  # keeps the fused weights, drops the adapter layers: --lora files go on top
    except ImportError as exc:
        raise RuntimeFailure(f"{ref.name}: loading a LoRA needs peft ({exc}); pip install peft") from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RuntimeFailure(f"{ref.name}: the LoRA does not fit its base model: {text}") from None


MAX_ADAPTERS = 8  # LoRA files kept loaded on one pipeline (batch, serve); the least recently used go first
_ADAPTERS = "_diffcli_adapters"  # attribute of a base pipeline: {adapter name: LoRA path}, oldest first


def activate_loras(base, specs) -> None:
    """Make exactly SPECS ("PATH:WEIGHT", a settled job's `lora`) the active LoRAs of BASE (and of the task
    pipelines sharing its modules), unfused: each file is loaded once as a peft adapter named by its
    content hash and kept for later jobs; no SPECS disables every adapter, so the base's own weights act
    alone again and give its exact pixels."""
    from diffcli.models.lora import lora_sha256, split_spec

    loaded: dict = getattr(base, _ADAPTERS, None)
    if loaded is None:
        loaded = {}
        setattr(base, _ADAPTERS, loaded)
    if not specs:
        if loaded:
            base.disable_lora()
        return
    if not hasattr(base, "load_lora_weights"):
        raise UsageError(f"this model ({type(base).__name__}) does not take LoRA files")
    names, weights = [], []
    for spec in specs:
        path, weight = split_spec(spec)
        name = f"lora_{lora_sha256(path)[:16]}"
        if name in loaded:
            loaded[name] = loaded.pop(name)  # most recently used last
        else:
            _load_adapter(base, path, name)
            loaded[name] = path
        if name in names:
            raise UsageError(f"LoRA {path} is named twice in one job; give it once with the sum of the weights")
        names.append(name)
        weights.append(weight)
    stale = [n for n in loaded if n not in names][: max(0, len(loaded) - MAX_ADAPTERS)]
    if stale:
        base.delete_adapters(stale)
        for n in stale:
            del loaded[n]
    base.enable_lora()
    base.set_adapters(names, adapter_weights=weights)


def _load_adapter(base, path: str, name: str) -> None:
    from safetensors import SafetensorError

    try:
        loading.load_lora_weights(base, str(path), adapter_name=name)
    except ImportError as exc:
        raise RuntimeFailure(f"loading a LoRA needs peft ({exc}); pip install peft") from None
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        try:  # a file that fit one component but not the next: take out what it left
            base.delete_adapters([name])
        except Exception:  # noqa: BLE001 - nothing of it was loaded
            pass
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RuntimeFailure(f"LoRA {path} does not fit this model: {text}") from None


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
    from diffcli.device import channels_last

    if channels_last(choice.device, choice.dtype):
        import torch

        for name in ("unet", "vae"):
            module = getattr(pipe, name, None)
            if module is not None:
                module.to(memory_format=torch.channels_last)


COMPILE_PENDING = "_diffcli_compile_pending"  # attribute of a compiled denoiser until its first call has run
FROZEN = "_diffcli_frozen"  # attribute of a compiled denoiser: whether its calls trace with inductor freezing


def compile_denoiser(pipe, device: str, dtype: str) -> None:
    """torch.compile (inductor) the pipeline's UNet or transformer in place: `Module.compile()` keeps the
    module object, so the task pipelines built on it with from_pipe run the compiled one too. Compiling
    happens on the first call (and again for a new size or batch); compiled and eager images differ by
    float rounding only (docs/speed.md). Frozen where device.compile_freezing says (compile_module)."""
    from diffcli.device import compile_freezing

    module = _denoiser(pipe)
    if module is not None:
        compile_module(module, freeze=compile_freezing(device, dtype)[0])


def _denoiser(pipe):
    """PIPE's UNet or transformer (None for neither)."""
    return getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)


def compile_module(module, freeze: bool) -> None:
    """`module.compile()`, marked for compiled_call; with FREEZE its calls trace with inductor's freezing,
    which folds the weights into the compiled graph as constants (oneDNN prepacks them, convolutions take
    the layout they run fastest in): faster steps on CPUs with native bfloat16, a longer compile, no reuse
    of the compiled graph by later processes, a second copy of the packed weights in memory. Frozen
    constants would go stale if a weight changed in place; diffcli never changes a loaded denoiser's
    weights in place (a fused LoRA is fused before the compile; --lora files add peft layers, new
    parameters whose identity dynamo guards, so a new set of LoRA files compiles again).
    inductor's cache goes under diffcli's home (paths.compile_cache), unless TORCHINDUCTOR_CACHE_DIR is set
    to another place than torch's default (importing diffusers sets it to that default)."""
    import os

    from diffcli import paths

    try:  # a private module of torch's: without it, the variable is left to torch
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, os.path.abspath(default_cache_dir())):
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(paths.compile_cache())
    except ImportError:
        pass
    module.compile()
    setattr(module, COMPILE_PENDING, True)
    setattr(module, FROZEN, freeze)


@contextmanager
def compiled_call(pipe):
    """The context of one call of PIPE: where its denoiser is compiled for freezing (compile_module), inductor
    traces and compiles with `freezing` on (dynamo reads it when it traces, so it is set for the call)."""
    if not getattr(_denoiser(pipe), FROZEN, False):
        yield
        return
    import torch._inductor.config as inductor_config

    with inductor_config.patch(freezing=True):
        yield


def compile_pending(pipe) -> str | None:
    """The name of PIPE's compiled denoiser whose first call (the compile) is still to come, else None;
    asking clears it, so the compile is reported once."""
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if module is not None and module.__dict__.pop(COMPILE_PENDING, False):
            return name
    return None


def task_pipeline(base, task: str):
    """The pipeline for TASK sharing BASE's loaded components (never loads weights again)."""
    key = (id(base), task)
    if key in _TASKS:
        return _TASKS[key]
    try:
        cls = _task_class(type(base).__name__, task)
        from diffcli import families
        from diffcli.family_checks import lacking_pipeline

        if families.single_task(type(base).__name__) == task:
            pipe = base
        elif cls is not None:
            pipe = switch_pipeline(cls, base)
        elif (known := lacking_pipeline(type(base).__name__, task)) is not None:
            raise ValueError(known)
        else:  # any other family: diffusers' AutoPipeline (importing it imports every pipeline it maps)
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

            auto = {
                "txt2img": AutoPipelineForText2Image,
                "img2img": AutoPipelineForImage2Image,
                "inpaint": AutoPipelineForInpainting,
            }
            if task not in auto:  # (an edit: only a family that declares its edit pipeline has one)
                raise ValueError(f"no {task} pipeline is known for {type(base).__name__}")
            pipe = auto[task].from_pipe(base)
    except ValueError as exc:
        raise UsageError(f"this model cannot do {task}: {exc}") from None
    pipe.set_progress_bar_config(disable=True)
    setattr(pipe, ORIGINAL_SCHEDULER, getattr(base, ORIGINAL_SCHEDULER))
    _TASKS[key] = pipe
    return pipe


def _task_class(base_class: str, task: str):
    """The pipeline class for TASK in the family whose pipelines include BASE_CLASS (diffcli.families,
    as diffusers' AutoPipeline mappings name them), imported alone; None for other models."""
    from diffcli import families

    name = families.pipeline_class_for(base_class, task)
    if name is None:
        return None
    import diffusers  # its lazy module imports only the module of the class asked for

    return getattr(diffusers, name)


def switch_pipeline(cls, pipeline):
    """CLS built on PIPELINE's components and config, as diffusers' AutoPipelineFor*.from_pipe(pipeline)
    builds it (without its ControlNet/PAG options), but without importing the AutoPipeline module,
    which imports every pipeline class it maps (about 0.7 s of a cold start)."""
    # Copied from diffusers.pipelines.auto_pipeline.AutoPipelineForText2Image.from_pipe (0.42), the parts that
    # apply without keyword arguments; tests/test_pipelines.py compares the two for each class above.
    original_config = dict(pipeline.config)
    expected_modules, optional_kwargs = cls._get_signature_keys(cls)
    pretrained_model_name_or_path = original_config.pop("_name_or_path", None)
    original_class_obj = {k: v for k, v in pipeline.components.items() if k in expected_modules}
    original_pipe_kwargs = {k: v for k, v in original_config.items() if k in optional_kwargs}
    for k in [k[1:] for k in original_config if k.startswith("_") and k[1:] in optional_kwargs]:
        original_pipe_kwargs[k] = original_config.pop(f"_{k}")
    kwargs = {**original_class_obj, **original_pipe_kwargs}
    unused_original_config = {
        f"{'' if k.startswith('_') else '_'}{k}": v for k, v in original_config.items() if k not in kwargs
    }
    missing_modules = set(expected_modules) - set(cls._optional_components) - set(kwargs)
    if missing_modules:
        raise ValueError(f"Pipeline {cls} expected {expected_modules}, but only {set(original_class_obj)} were passed")
    model = cls(**kwargs)
    model.register_to_config(_name_or_path=pretrained_model_name_or_path)
    model.register_to_config(**unused_original_config)
    return model


def set_scheduler(pipe, name: str) -> None:
    """Install a fresh scheduler NAME configured from the model's original scheduler config."""
    from diffcli.schedulers import build

    pipe.scheduler = build(name, getattr(pipe, ORIGINAL_SCHEDULER, pipe.scheduler.config))


def spatial_latents(pipe, latents, size: tuple[int, int]):
    """PIPE's denoising LATENTS as its VAE's (batch, channels, height, width): FLUX.1's 2x2-packed tokens
    unpacked; FLUX.2's tokens (2x2-patchified latents, batch-normed) put back in place, de-normalised and
    unpatchified, as its pipelines do before decoding; 4-D latents as they are. SIZE: (width, height)."""
    import torch

    if latents.ndim != 3:
        return latents
    if hasattr(pipe, "_unpack_latents"):  # FLUX.1: (batch, tokens, channels)
        return pipe._unpack_latents(latents, size[1], size[0], pipe.vae_scale_factor)
    if hasattr(pipe, "_unpatchify_latents") and hasattr(pipe.vae, "bn"):  # FLUX.2: tokens in row-major order
        side = pipe.vae_scale_factor * 2
        latents = latents.reshape(latents.shape[0], size[1] // side, size[0] // side, -1).permute(0, 3, 1, 2)
        bn, eps = pipe.vae.bn, pipe.vae.config.batch_norm_eps
        mean = bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + eps).to(latents.device, latents.dtype)
        return pipe._unpatchify_latents(latents * std + mean)
    return latents


def decode_latents(pipe, latents, size: tuple[int, int] | None = None):
    """Latents to PIL images (used for --save-partial); SIZE (width, height) unpacks FLUX's packed latents
    (spatial_latents), and a VAE with a scaling and a shift factor (SD 3.x, FLUX.1) gets them undone, as
    their pipelines do (FLUX.2's VAE has neither: its latents are batch-normed)."""
    import torch

    with torch.no_grad():
        vae = pipe.vae
        latents = spatial_latents(pipe, latents, size)
        scale = vae.config.get("scaling_factor") or 1.0
        scaled = latents.to(vae.dtype) / scale + (vae.config.get("shift_factor") or 0.0)
        images = vae.decode(scaled, return_dict=False)[0]
    return pipe.image_processor.postprocess(images, output_type="pil")


def loaded_keys() -> list[tuple]:
    """The keys of the pipelines this process holds, in the order they were loaded."""
    return list(_BASES)


def loaded_bytes(key: tuple) -> int:
    """Bytes of weights (parameters and buffers) the loaded pipeline KEY holds; 0 when none is loaded."""
    base = _BASES.get(key)
    if base is None:
        return 0
    total, seen = 0, set()
    for component in base.components.values():
        for tensor in [*getattr(component, "parameters", lambda: [])(), *getattr(component, "buffers", lambda: [])()]:
            if id(tensor) not in seen:  # (tied weights count once)
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def release(key: tuple) -> None:
    """Forget one loaded pipeline (and the task pipelines built on it), so its memory can go."""
    base = _BASES.pop(key, None)
    if base is not None:
        for task_key in [k for k in _TASKS if k[0] == id(base)]:
            del _TASKS[task_key]
        from diffcli.control import forget

        forget(base)  # its ControlNet pipelines


def release_models() -> None:
    """Forget every loaded pipeline, so its memory can go (batch: a model no longer needed)."""
    import gc

    _BASES.clear()
    _TASKS.clear()
    from diffcli.control import release

    release()
    gc.collect()

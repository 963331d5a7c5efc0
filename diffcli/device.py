"""Device and dtype selection: every automatic rule lives here (documented in docs/device.md).

Rules for `--device auto`: CUDA ▸ MPS ▸ CPU.
Rules for `--dtype auto`: on CUDA bfloat16 for the families trained and shipped in it (SD 3.x, FLUX.1)
where the GPU computes it (torch.cuda.is_bf16_supported: Ampere and later), float16 otherwise; float16
on MPS; on CPU bfloat16 where the processor computes it natively (AMX or AVX512-BF16, measured in
bench/cpu_dtype.py), float32 elsewhere.
On CUDA, and on a CPU with native bfloat16 running in bfloat16, the UNet and VAE also run in channels_last
memory format (memory_format; pipelines._apply_memory_options), and `--compile` traces the denoiser with
inductor freezing there (compile_freezing; pipelines.compile_module).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from diffcli.errors import UsageError

DEVICES_HELP = "auto, cpu, cuda, cuda:N or mps"
DTYPES = ("auto", "float32", "float16", "bfloat16")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # torch device string
    dtype: str  # float32 | float16 | bfloat16
    reason: str  # why, in words, for `diffcli device` and --debug


def validate(device: str, dtype: str) -> None:
    """Syntax checks that need no torch, so bad flags fail before any import."""
    if not _DEVICE_RE.match(device):
        raise UsageError(f"invalid --device '{device}'; use {DEVICES_HELP}")
    if dtype not in DTYPES:
        raise UsageError(f"invalid --dtype '{dtype}'; use one of {', '.join(DTYPES)}")


CPU_BF16_ENV = "DIFFCLI_CPU_BF16"  # 1 / 0: answer cpu_has_native_bf16 so, whatever the processor (tests, comparisons)


def cpu_bf16_forced() -> bool | None:
    """What DIFFCLI_CPU_BF16 forces cpu_has_native_bf16 to answer (True/False), or None when it is unset."""
    import os

    value = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"invalid {CPU_BF16_ENV}='{value}'; use 1, 0 or auto")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX512-BF16), unless DIFFCLI_CPU_BF16 says otherwise."""
    forced = cpu_bf16_forced()
    if forced is not None:
        return forced
    import torch

    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def _made_in_bf16(family: str | None) -> bool:
    """Whether FAMILY's models are released in bfloat16 (float16 overflows in parts of them: SD 3.x, FLUX.1)."""
    from diffcli import families

    spec = families.get(family)
    return spec is not None and spec.bf16


def auto_dtype(
    device: str, family: str | None = None, gpu_bf16: bool = False, cpu_bf16: bool = False
) -> tuple[str, str]:
    """(dtype, why) for `--dtype auto` on DEVICE, for a model of FAMILY; GPU_BF16 / CPU_BF16: whether the GPU
    (torch.cuda.is_bf16_supported) / the CPU (cpu_has_native_bf16) computes bfloat16."""
    if device.startswith("cuda"):
        if _made_in_bf16(family) and gpu_bf16:
            return "bfloat16", f"{family} models are made in bfloat16 and this GPU computes it"
        return "float16", "half precision on GPU"
    if device == "mps":
        return "float16", "half precision on GPU"
    if cpu_bf16_forced() is not None:
        return (
            ("bfloat16", f"{CPU_BF16_ENV} set: taken as a CPU that computes bfloat16 natively")
            if cpu_bf16
            else ("float32", f"{CPU_BF16_ENV} set: taken as a CPU without native bfloat16")
        )
    if cpu_bf16:
        return "bfloat16", "this CPU computes bfloat16 natively (AMX/AVX512-BF16)"
    return "float32", "this CPU has no native bfloat16"


def native_bf16_run(device: str, dtype: str) -> bool:
    """Whether a run on DEVICE at DTYPE computes bfloat16 natively on the CPU (AMX / AVX512-BF16): where the
    CPU-side speed choices (memory_format, compile_freezing) differ from plain diffusers'."""
    return device == "cpu" and dtype == "bfloat16" and cpu_has_native_bf16()


def memory_format(device: str, dtype: str) -> tuple[bool, str]:
    """(channels_last, why): whether the UNet and VAE run in channels_last memory format on DEVICE at DTYPE.

    On CUDA, where cuDNN's convolutions are faster in it (diffusers' optimisation guide). On a CPU that
    computes bfloat16 natively (AMX / AVX512-BF16), in bfloat16: measured 1.16x per guided SD-1.5 UNet step
    at 512² on a 2-core Xeon with AMX (issue 31). Elsewhere the layout stays as plain diffusers has it (on an
    AVX2 CPU in float32, channels_last changed the pixels and gained nothing: docs/speed.md)."""
    if device.startswith("cuda"):
        return True, "channels_last: cuDNN's convolutions are faster in it"
    if native_bf16_run(device, dtype):
        return True, "channels_last: bfloat16 convolutions on a CPU that computes them natively run faster in it"
    return False, "contiguous: as plain diffusers (channels_last gains nothing here)"


def compile_freezing(device: str, dtype: str) -> tuple[bool, str]:
    """(freeze, why): whether `--compile` (batch, serve) traces the denoiser with inductor freezing on DEVICE
    at DTYPE: its weights become constants of the compiled graph, which oneDNN prepacks. On a CPU computing
    bfloat16 natively, in bfloat16: measured 1.32-1.36x per guided SD-1.5 UNet step at 512² on a 2-core
    Xeon with AMX, against eager (issue 31). Not elsewhere: on an AVX2 CPU in float32 a frozen SD-1.5 UNet
    ran 0.99-1.01x of eager, as the plain compile did, and torch caches no frozen graph across processes
    (bench/unet_step.py, docs/benchmarks.md); GPUs compile as diffusers' guide does."""
    if native_bf16_run(device, dtype):
        return True, "frozen: the compiled denoiser's weights are prepacked for this CPU's native bfloat16"
    if device == "cpu":
        return False, "plain: freezing measured no faster here, and torch reuses plain compiled graphs across runs"
    return False, "plain: torch.compile's default (inductor)"


def channels_last(device: str, dtype: str = "float32") -> bool:
    """Whether the UNet and VAE run in channels_last memory format (memory_format)."""
    return memory_format(device, dtype)[0]


def choose(device: str = "auto", dtype: str = "auto", family: str | None = None) -> DeviceChoice:
    """Pick the device and dtype (FAMILY: the model's, for --dtype auto on CUDA); explicit choices are
    checked against what this machine has."""
    validate(device, dtype)
    import torch

    reasons = []
    if device == "auto":
        if torch.cuda.is_available():
            device, why = "cuda", f"CUDA GPU found ({torch.cuda.get_device_name(0)})"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device, why = "mps", "Apple MPS available"
        else:
            device, why = "cpu", "no CUDA or MPS device"
        reasons.append(f"device {device}: {why}")
    elif device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA device is available here")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
        reasons.append(f"device {device}: requested")
    elif device == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise UsageError("--device mps: Apple MPS is not available here")
        reasons.append("device mps: requested")
    else:
        reasons.append("device cpu: requested")

    if dtype == "auto":
        gpu_bf16 = device.startswith("cuda") and _made_in_bf16(family) and torch.cuda.is_bf16_supported()
        cpu_bf16 = device == "cpu" and cpu_has_native_bf16()
        dtype, why = auto_dtype(device, family, gpu_bf16, cpu_bf16)
        reasons.append(f"dtype {dtype}: {why}")
    else:
        if dtype == "float16" and device == "cpu":
            raise UsageError("--dtype float16 is not supported on CPU; use float32 or bfloat16")
        reasons.append(f"dtype {dtype}: requested")
    return DeviceChoice(device=device, dtype=dtype, reason="; ".join(reasons))


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]

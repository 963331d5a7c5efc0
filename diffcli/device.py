"""Device and dtype selection: every automatic rule lives here (documented in docs/device.md).

Rules for `--device auto`: CUDA ▸ MPS ▸ CPU.
Rules for `--dtype auto`: float16 on CUDA and MPS; on CPU bfloat16 where the processor computes it
natively (AMX or AVX512-BF16, measured in bench/cpu_dtype.py), float32 elsewhere.
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


def cpu_has_native_bf16() -> bool:
    import torch

    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def choose(device: str = "auto", dtype: str = "auto") -> DeviceChoice:
    """Pick the device and dtype; explicit choices are checked against what this machine has."""
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
        if device.startswith("cuda") or device == "mps":
            dtype, why = "float16", "half precision on GPU"
        elif cpu_has_native_bf16():
            dtype, why = "bfloat16", "this CPU computes bfloat16 natively (AMX/AVX512-BF16)"
        else:
            dtype, why = "float32", "this CPU has no native bfloat16"
        reasons.append(f"dtype {dtype}: {why}")
    else:
        if dtype == "float16" and device == "cpu":
            raise UsageError("--dtype float16 is not supported on CPU; use float32 or bfloat16")
        reasons.append(f"dtype {dtype}: requested")
    return DeviceChoice(device=device, dtype=dtype, reason="; ".join(reasons))


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]

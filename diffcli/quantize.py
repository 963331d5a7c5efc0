"""`--quantize`: load the denoiser (UNet or transformer) with quantized weights, to fit in less memory.

Methods, through diffusers' quantization backends (docs/device.md says which to use where):
  int8  torchao int8 weight-only (Int8WeightOnlyConfig): any device, CPU included; about half the
        memory of bfloat16 weights. Needs `pip install 'diffcli[torchao]'`.
  nf4   bitsandbytes 4-bit NormalFloat: CUDA only; about a quarter. Needs `pip install bitsandbytes`.
A GGUF transformer file is already quantized: it takes no --quantize. Names are checked without torch.
"""

from __future__ import annotations

import importlib.util

from diffcli.errors import UsageError

METHODS = {
    "none": ("", "full-precision weights"),
    "int8": ("torchao", "torchao int8 weight-only; any device"),
    "nf4": ("bitsandbytes", "bitsandbytes 4-bit NF4; CUDA only"),
}
INSTALL = {"torchao": "pip install 'diffcli[torchao]'", "bitsandbytes": "pip install bitsandbytes"}


def check_name(name: str | None) -> None:
    if name is not None and name not in METHODS:
        raise UsageError(f"invalid --quantize '{name}'; use one of: {', '.join(METHODS)}")


def check(job, ref) -> None:
    """Usage errors, before loading: a GGUF file (already quantized), a missing backend package."""
    if job.quantize in (None, "none"):
        return
    if str(ref.path).lower().endswith(".gguf"):
        raise UsageError(f"{ref.name}: a GGUF file is already quantized; --quantize does not apply")
    if ref.kind not in ("diffusers",):
        raise UsageError(f"--quantize applies to diffusers models (folders, repo ids, aliases), not to {ref.name}")
    if job.quantize == "nf4" and job.device in ("cpu", "mps"):
        raise UsageError(
            f"--quantize nf4 needs a CUDA GPU (bitsandbytes); on {job.device} use --quantize int8 "
            "(torchao) or a GGUF transformer file"
        )
    package = METHODS[job.quantize][0]
    if importlib.util.find_spec(package) is None:
        where = " and a CUDA GPU (elsewhere use --quantize int8 or a GGUF file)" if job.quantize == "nf4" else ""
        raise UsageError(f"--quantize {job.quantize} needs the {package} package{where}: {INSTALL[package]}")


def pipeline_config(method: str | None, denoiser: str, torch_dtype, device: str):
    """diffusers' PipelineQuantizationConfig quantizing the DENOISER component ("unet" or "transformer")
    with METHOD; None for no quantization."""
    if method in (None, "none"):
        return None
    from diffusers import PipelineQuantizationConfig

    if method == "nf4":
        if not device.startswith("cuda"):
            raise UsageError(
                f"--quantize nf4 needs a CUDA GPU (bitsandbytes); on {device} use --quantize int8 "
                "(torchao) or a GGUF transformer file"
            )
        from diffusers import BitsAndBytesConfig

        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch_dtype)
    else:
        from diffusers import TorchAoConfig  # (torchao's import notes: pipelines.prepare_libraries)
        from torchao.quantization import Int8WeightOnlyConfig

        config = TorchAoConfig(Int8WeightOnlyConfig())
    return PipelineQuantizationConfig(quant_mapping={denoiser: config})

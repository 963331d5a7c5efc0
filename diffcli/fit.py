"""What fits in memory: the weights of the well-known models at each precision, against a device's memory.

Parameter counts are those of the published checkpoints (denoiser; text encoders; VAE), in billions.
Quantization (--quantize, a GGUF file) applies to the denoiser only; text encoders and VAE stay at
the dtype. A model "fits" when its weights take at most FIT_SHARE of the memory (the rest is for
activations, the OS and other programs); with `--offload model` (CUDA) only the largest component
must be on the GPU at a time. Estimates, not measurements: no torch here.
"""

from __future__ import annotations

FIT_SHARE = 0.8
# model: (family, denoiser, text encoders, vae), billions of parameters
MODELS = {
    "sd15": ("sd1", 0.86, 0.12, 0.08),
    "sdxl": ("sdxl", 2.57, 0.82, 0.08),
    "sd35-medium": ("sd3", 2.47, 5.58, 0.08),  # CLIP-L + CLIP-G + T5-XXL (4.76)
    "sd35-large": ("sd3", 8.06, 5.58, 0.08),
    "flux-dev / flux-schnell": ("flux", 11.9, 4.88, 0.08),  # CLIP-L + T5-XXL
    "flux-kontext": ("flux-kontext", 11.9, 4.88, 0.08),  # FLUX.1's sizes (diffcli edit)
    "flux2-dev": ("flux2-dev", 32.2, 24.0, 0.08),  # Mistral Small 3.1 24B (vision tower included)
    "flux2-klein-4b": ("flux2-klein", 4.0, 4.02, 0.08),  # BFL's nominal 4B; Qwen3-4B
    "flux2-klein-9b / -9b-kv": ("flux2-klein", 9.0, 8.19, 0.08),  # BFL's nominal 9B; Qwen3-8B
    "chroma-hd": ("chroma", 8.9, 4.76, 0.08),  # T5-XXL only
    "z-image-turbo": ("z-image", 6.15, 4.02, 0.08),  # Qwen3-4B
    "qwen-image": ("qwen-image", 20.4, 8.29, 0.13),  # Qwen2.5-VL-7B (vision tower included); its own VAE
    "qwen-image-edit-2509 / -2511": ("qwen-image-edit-plus", 20.4, 8.29, 0.13),  # Qwen-Image's sizes (edit)
    "qwen-image-2.1": ("qwen-image-2.1", 7.12, 8.77, 0.34),  # Qwen3-VL-8B (vision tower included); 16x VAE
}
BYTES = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0}
QUANTIZED = {"int8": 1.0, "nf4": 0.56, "gguf-q8_0": 1.06, "gguf-q4_k": 0.56}  # bytes per denoiser parameter


def weights_gib(model: str, dtype: str, quantize: str | None = None) -> tuple[float, float]:
    """(all weights, largest component) in GiB for MODEL at DTYPE, its denoiser quantized by QUANTIZE."""
    _, denoiser, text, vae = MODELS[model]
    per = BYTES[dtype]
    den = denoiser * (QUANTIZED[quantize] if quantize else per)
    total = den + (text + vae) * per
    return total * 1e9 / 2**30, max(den, text * per) * 1e9 / 2**30


def verdicts(memory_gib: float, dtype: str, can_offload: bool) -> list[dict]:
    """For each model and precision: its weights and whether they fit in MEMORY_GIB."""
    from diffcli import families

    rows = []
    for model, (family, *_) in MODELS.items():
        transformer = families.get(family).denoiser == "transformer"  # these come quantized as GGUF files too
        for quantize in (None, "int8", "gguf-q4_k") if transformer else (None,):
            total, largest = weights_gib(model, dtype, quantize)
            if total <= FIT_SHARE * memory_gib:
                verdict = "fits"
            elif can_offload and largest <= FIT_SHARE * memory_gib:
                verdict = "fits with --offload model"
            else:
                verdict = "does not fit"
            rows.append(
                {
                    "model": model,
                    "family": family,
                    "weights": quantize or dtype,
                    "weights_gib": round(total, 1),
                    "verdict": verdict,
                }
            )
    return rows

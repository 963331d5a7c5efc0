"""LoRA files for the tests, made with peft on a tiny fixture model: diffusers/peft keys, and kohya keys.

The adapters get random (not zero) weights, so they visibly change images; the kohya file is the same
kind of adapter with its keys renamed the way kohya's sd-scripts (and AUTOMATIC1111) name them:
`lora_unet_<module_path_with_underscores>.lora_down.weight` / `.lora_up.weight` / `.alpha`, and
`lora_te_...` for the text encoder.
"""

from __future__ import annotations

from pathlib import Path

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def build_peft_lora(
    model_dir: Path,
    out: Path,
    *,
    seed: int,
    rank: int = 4,
    text_encoder: bool = False,
    scale: float = 0.3,
    keys: str = "diffusers",
) -> Path:
    """A .safetensors LoRA for MODEL_DIR with KEYS "diffusers" (what diffusers' training scripts save:
    `lora.down`/`lora.up`) or "peft" (peft's own `lora_A`/`lora_B`)."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=UNET_TARGETS, init_lora_weights=False))
    layers = {"unet_lora_layers": _randomized(unet, scale, keys)}
    if text_encoder:  # by hand: transformers 5's own add_adapter asks for a peft newer than the registry has
        from transformers import CLIPTextModel

        te = CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder")
        layers["text_encoder_lora_layers"] = {
            f"text_model.{name}.lora_{ab}.weight": torch.randn(shape) * scale  # real files' module names
            for name, m in te.named_modules()
            if name.endswith(tuple(TEXT_TARGETS))
            for ab, shape in (("A", (rank, m.in_features)), ("B", (m.out_features, rank)))
        }
    out = Path(out)
    StableDiffusionPipeline.save_lora_weights(out.parent, weight_name=out.name, **layers)
    return out


def _randomized(model, scale: float, keys: str) -> dict:
    import torch
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import get_peft_model_state_dict

    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn_like(param) * scale)
    state = get_peft_model_state_dict(model)
    return convert_state_dict_to_diffusers(state) if keys == "diffusers" else state


def to_kohya(peft_file: Path, out: Path, rank: int = 4) -> Path:
    """PEFT_FILE's weights under kohya key names (alpha = rank, so the scale is the same)."""
    import torch
    from safetensors.torch import load_file, save_file

    kohya = {}
    for key, value in load_file(str(peft_file)).items():
        prefix, _, rest = key.partition(".")
        for part, kind in (
            (".lora_A.weight", "down"),
            (".lora.down.weight", "down"),
            (".lora_B.weight", "up"),
            (".lora.up.weight", "up"),
        ):
            if rest.endswith(part):
                module = rest.removesuffix(part)  # "down_blocks.1....to_q"
                break
        name = {"unet": "lora_unet_", "text_encoder": "lora_te_"}[prefix] + module.replace(".", "_")
        kohya[f"{name}.lora_{kind}.weight"] = value.contiguous()
        kohya[f"{name}.alpha"] = torch.tensor(float(rank))
    save_file(kohya, str(out))
    return Path(out)


def build_transformer_lora(model_dir: Path, out: Path, *, seed: int, rank: int = 4, scale: float = 0.3) -> Path:
    """A .safetensors LoRA (peft keys) on the attention projections (to_q, to_k, to_v) of the transformer of
    the flow-matching model at MODEL_DIR, saved by its own pipeline class's save_lora_weights, as the family's
    trainers in diffusers save them."""
    import torch
    from diffusers import DiffusionPipeline
    from peft import LoraConfig

    torch.manual_seed(seed)
    pipe = DiffusionPipeline.from_pretrained(model_dir, torch_dtype=torch.float32)
    transformer = pipe.transformer
    targets = sorted(
        {n.rsplit(".", 1)[-1] for n, _ in transformer.named_modules() if n.endswith(("to_q", "to_k", "to_v"))}
    )
    assert targets, f"{type(transformer).__name__} has no to_q/to_k/to_v projections"
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False))
    out = Path(out)
    type(pipe).save_lora_weights(
        out.parent, weight_name=out.name, transformer_lora_layers=_randomized(transformer, scale, "peft")
    )
    return out

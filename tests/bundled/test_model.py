import json

import numpy as np
import pytest

from diffcli.bundled import MODEL_DIR, defaults

torch = pytest.importorskip("torch")


def test_layout_and_size():
    idx = json.loads((MODEL_DIR / "model_index.json").read_text())
    assert idx["_class_name"] == "StableDiffusionPipeline" and idx["requires_safety_checker"] is False
    assert idx["safety_checker"] == [None, None] and idx["feature_extractor"] == [None, None]
    for f in [
        "vae/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
    ]:
        assert (MODEL_DIR / f).is_file(), f
    total = sum(p.stat().st_size for p in MODEL_DIR.rglob("*") if p.is_file())
    assert total <= 40 * 2**20
    from safetensors import safe_open

    with safe_open(str(MODEL_DIR / "unet/diffusion_pytorch_model.safetensors"), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16
    d = defaults()
    assert {"steps", "cfg", "scheduler", "width", "height", "family"} <= set(d)
    assert d["family"] == "bundled" and d["width"] == d["height"] == 64


def test_plain_diffusers_pipeline_generates():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(MODEL_DIR), torch_dtype=torch.float32)
    assert pipe.unet.dtype == torch.float32 and pipe.vae_scale_factor == 4
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        ["a castle at dusk", "a house"],
        num_inference_steps=4,
        guidance_scale=3.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert out.shape == (2, 64, 64, 3) and np.isfinite(out).all()
    assert out.std() > 0.02  # not a blank image

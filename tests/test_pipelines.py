"""diffcli.pipelines: library preparation before a model loads."""

import inspect

import torch


def test_cached_processor_signatures_change_nothing_but_the_lookup(tiny_sd):
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    unet = UNet2DConditionModel.from_pretrained(str(tiny_sd / "unet"), torch_dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 16, 16, generator=gen)
    text = torch.randn(1, 8, unet.config.cross_attention_dim, generator=gen)
    with torch.no_grad():
        before = unet(x, 10, text).sample

    from diffcli.pipelines import prepare_libraries

    prepare_libraries()
    for cls in (AttnProcessor, AttnProcessor2_0):
        sig, code = cls.__call__.__signature__, cls.__call__.__code__
        assert inspect.signature(cls.__call__) is sig  # the lookup now returns the cached one
        # ... which is the function's own: its positional parameters, in order
        assert list(sig.parameters)[:code.co_argcount] == list(code.co_varnames[:code.co_argcount])
        assert {"attn", "hidden_states", "encoder_hidden_states"} <= set(sig.parameters)
    with torch.no_grad():
        assert torch.equal(unet(x, 10, text).sample, before)

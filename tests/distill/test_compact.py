"""The compact student (block removal) and the knowledge-distillation loss that starts its run."""

import json

import pytest
import torch

from diffcli.distill.compact import compact_config, keeps_cross_attention
from diffcli.distill.config import DistillConfig
from diffcli.training.distill import lcm


def _pipe(path):
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(str(path), torch_dtype=torch.float32, local_files_only=True)


def _kd_loss(pipe, student, target, guidance, cutoff=0.0):
    cfg = DistillConfig(out="x", guidance=guidance, resolution=64, cfg_cutoff=cutoff)
    step = lcm.LCMStep(cfg, pipe, pipe.unet, student, target, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(2, 4, 16, 16, generator=gen)
    import contextlib

    with torch.no_grad():
        return step(student, z0, ["a red castle", "a tree"], gen, contextlib.nullcontext, kd=True).item()


def test_compact_student_drops_only_the_removed_blocks(bundled_like):
    pipe = _pipe(bundled_like)
    full, _ = lcm.make_student(pipe.unet, "lcm", 32)
    small, target = lcm.make_student(pipe.unet, "lcm", 32, compact=True)
    assert small.mid_block is None and full.mid_block is not None
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(small) < n(full) and n(target) == n(small)
    # every kept weight is the teacher's
    teacher = pipe.unet.state_dict()
    for k, v in small.state_dict().items():
        if not k.startswith("time_embedding.cond_proj"):
            assert torch.equal(v, teacher[k]), k
    # KD target at guidance 1 (w = 0) is the teacher's conditional prediction: a full student starts
    # there exactly (zero-initialised w projection); the compact one does not
    assert _kd_loss(pipe, full, None, (1.0, 1.0)) < 1e-10  # batch-2 vs batch-1 rounding only
    assert _kd_loss(pipe, small, None, (1.0, 1.0)) > 1e-6
    # at guidance > 1 the target is the guided prediction, which the unguided start misses
    assert _kd_loss(pipe, full, None, (4.0, 4.0)) > 1e-6
    # ... except below the teacher's guidance cutoff, where the teacher does not guide (as it samples)
    assert _kd_loss(pipe, full, None, (4.0, 4.0), cutoff=0.9999) < 1e-10


def test_compact_config_and_cross_attention_check(bundled_like):
    bundled = json.loads((bundled_like / "unet" / "config.json").read_text())
    c = compact_config(bundled)
    assert c["mid_block_type"] is None and c["down_block_types"][-1] == "DownBlock2D"
    assert c["down_block_types"][:-1] == bundled["down_block_types"][:-1] and "up_block_types" not in c
    assert keeps_cross_attention(bundled)
    # a UNet whose only cross-attention is in its lowest down level and mid block would lose it all
    lone = {"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["UpBlock2D"] * 2}
    assert not keeps_cross_attention(lone)


@pytest.mark.parametrize("method", ["lcm-lora"])
def test_compact_is_refused_for_a_lora(method):
    from diffcli.errors import UsageError

    with pytest.raises(UsageError, match="is for --method lcm"):
        DistillConfig(out="x", method=method, student_unet="compact").validate()

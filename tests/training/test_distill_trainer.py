"""diffcli/training/distill/trainer.py: the learning-rate schedule."""

from __future__ import annotations

import pytest

from diffcli.training.distill.trainer import lr_at


def test_constant_schedule_is_warm_up_then_flat():
    assert [lr_at(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_linear_schedule_decays_to_zero_after_the_kd_steps():
    lrs = [lr_at(s, 1.0, 2, "linear", decay_from=4, total=8) for s in range(8)]
    assert lrs[:4] == [0.5, 1.0, 1.0, 1.0]  # warm-up, then flat through the KD steps
    assert lrs[4:] == pytest.approx([1.0, 0.75, 0.5, 0.25])  # then falling toward 0 at step 8
    # without KD steps the decay starts where the warm-up ends
    assert [lr_at(s, 1.0, 2, "linear", total=4) for s in range(4)] == pytest.approx([0.5, 1.0, 1.0, 0.5])

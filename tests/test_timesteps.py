"""diffcli/timesteps.py: the shifted schedule, on diffusers' own schedulers."""

from __future__ import annotations

import inspect

import pytest

from diffcli.errors import UsageError
from diffcli.timesteps import check_sampler, schedule_kwargs, shifted


def _lcm(original_steps=50):
    from diffusers import LCMScheduler

    return LCMScheduler(
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        rescale_betas_zero_snr=True,
        original_inference_steps=original_steps,
    )


def test_lcm_steps_move_toward_the_clean_end_and_stay_on_the_distillation_grid():
    sched = _lcm()
    sched.set_timesteps(4)
    assert sched.timesteps.tolist() == [999, 759, 499, 259]
    # u' = 0.5u / (1 - 0.5u) on u = (t + 1) / 1000: 0.76 -> 0.613, 0.5 -> 0.333, 0.26 -> 0.149, so
    # t' = 1000u' - 1 = 612, 332, 148, then the nearest of 19, 39, ..., 999
    assert shifted(sched, 4, 0.5) == [999, 619, 339, 139]
    later = shifted(sched, 4, 2.0)
    assert later[0] == 999 and all(a > b for a, b in zip(later[1:], [759, 499, 259]))
    assert all((t + 1) % 20 == 0 for t in shifted(sched, 8, 0.3))


def test_a_strong_shift_never_repeats_a_timestep():
    sched = _lcm(original_steps=20)  # grid 49, 99, ..., 999
    steps = shifted(sched, 20, 0.2)
    assert steps == sorted(set(steps), reverse=True) and steps[-1] == 49
    assert 10 <= len(steps) < 20  # steps piled onto the bottom of a coarse grid run once


def test_no_shift_leaves_the_pipeline_arguments_alone():
    class Pipe:
        scheduler = _lcm()

    assert schedule_kwargs(Pipe, 4, 1.0) == {"num_inference_steps": 4}
    assert schedule_kwargs(Pipe, 4, None) == {"num_inference_steps": 4}
    assert schedule_kwargs(Pipe, 4, 0.5) == {"num_inference_steps": 4, "timesteps": [999, 619, 339, 139]}


def test_the_sampler_table_knows_which_samplers_take_custom_timesteps():
    import diffusers

    from diffcli.schedulers import SCHEDULERS

    for name, entry in SCHEDULERS.items():
        takes = "timesteps" in inspect.signature(getattr(diffusers, entry.cls).set_timesteps).parameters
        assert entry.custom_timesteps == (takes and not entry.options.get("use_karras_sigmas")), name


def test_check_sampler():
    check_sampler("lcm", 0.5)
    check_sampler("ddim", 1.0)  # no shift: any sampler
    check_sampler(None, 0.5)  # the model's own sampler: checked when it is loaded
    with pytest.raises(UsageError, match="'ddim' sampler"):
        check_sampler("ddim", 0.5)


def test_a_pipeline_that_ships_its_own_sigmas_samples_on_them_or_on_the_steps_asked(tiny_flux):
    """A pipeline config's sample_sigmas (Qwen-Image 2.1's step-distilled releases; here registered on a FLUX.1
    pipeline, whose family's own sigmas are linspace(1, 1/N)): as many steps as it ships leave the pipeline to
    them (--shift shifts them); another step count passes that many of the family's own."""
    import torch
    from diffusers import DiffusionPipeline

    from diffcli.timesteps import flow_sigmas, shift_fraction

    pipe = DiffusionPipeline.from_pretrained(str(tiny_flux), torch_dtype=torch.float32)
    own = [1.0, 0.7, 0.35]
    pipe.register_to_config(sample_sigmas=own)
    assert schedule_kwargs(pipe, 3, None) == {"num_inference_steps": 3}
    assert schedule_kwargs(pipe, 2, None) == {"num_inference_steps": 2, "sigmas": [1.0, 0.5]}
    assert flow_sigmas(pipe, 3, 2.0) == [shift_fraction(u, 2.0) for u in own]
    pipe.register_to_config(sample_sigmas=None)
    assert schedule_kwargs(pipe, 3, None) == {"num_inference_steps": 3}
    assert flow_sigmas(pipe, 2, 2.0) == [shift_fraction(u, 2.0) for u in (1.0, 0.5)]

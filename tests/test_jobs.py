from __future__ import annotations

import pytest

from diffcli.errors import UsageError
from diffcli.jobs import MAX_SEED, Job, validate, with_seed


def test_explicit_flags_win_over_a_recorded_job():
    recorded = Job(task="img2img", prompt="a", steps=30, cfg=7.0, seed=5, image="in.png", strength=0.3)
    merged = Job(task="img2img", steps=10).merged_over(recorded)
    assert (merged.prompt, merged.steps, merged.cfg, merged.seed, merged.strength) == ("a", 10, 7.0, 5, 0.3)
    as_txt2img = Job(task="txt2img").merged_over(recorded)
    assert as_txt2img.image is None and as_txt2img.strength is None


def test_seed_sequence_is_documented_and_wraps():
    job = Job(seed=MAX_SEED - 1, num_images=3)
    assert job.seeds() == [MAX_SEED - 1, MAX_SEED, 0]
    assert with_seed(Job()).seed is not None


def test_defaults_fill_only_what_is_missing():
    job = Job(task="img2img", steps=5, image="x").with_defaults({"steps": 25, "cfg": 7.0})
    assert (job.steps, job.cfg, job.strength, job.num_images, job.prompt) == (5, 7.0, 0.6, 1, "")


@pytest.mark.parametrize("job", [Job(task="img2img"), Job(task="inpaint", image="x"), Job(seed=-1), Job(steps=0),
                                 Job(task="nope"), Job(mask_blur=-2)])
def test_invalid_jobs(job):
    with pytest.raises(UsageError):
        validate(job)

from __future__ import annotations

import pytest

from diffcli.errors import UsageError
from diffcli.jobs import Job, validate, with_seed
from diffcli.limits import MAX_SEED


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


@pytest.mark.parametrize(
    "job",
    [
        Job(task="img2img"),
        Job(task="inpaint", image="x"),
        Job(seed=-1),
        Job(steps=0),
        Job(task="nope"),
        Job(mask_blur=-2),
    ],
)
def test_invalid_jobs(job):
    with pytest.raises(UsageError):
        validate(job)


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"steps": 10**23}, "--steps"),
        ({"steps": 5000}, "--steps"),
        ({"num_images": 10**9}, "--num-images"),
        ({"width": 100_000}, "--width"),
        ({"cfg": float("inf")}, "--cfg"),
        ({"cfg": float("nan")}, "--cfg"),
        ({"shift": float("nan")}, "--shift"),
    ],
)
def test_absurd_values_are_refused(changes, needle):
    from diffcli.jobs import Job, validate

    with pytest.raises(UsageError, match=needle):
        validate(Job(**changes))


def test_pixel_limit_counts_the_batch():
    from dataclasses import replace

    from diffcli.jobs import Job, check_limits, default_max_pixels

    job = Job(width=4096, height=4096, num_images=2, batch_size=2)
    with pytest.raises(UsageError, match="--max-pixels 33554432"):
        check_limits(job, None)
    check_limits(job, 33554432)  # the override lets it through
    check_limits(replace(job, batch_size=1), 4096 * 4096)
    assert 512 * 512 <= default_max_pixels() <= 4096 * 4096


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"steps": "4"}, "'steps' must be an integer, not a string"),
        ({"seed": 1.5}, "'seed' must be an integer, not a number"),
        ({"cfg": True}, "'cfg' must be a number, not a boolean"),
        ({"prompt": ["a"]}, "'prompt' must be a string, not a list"),
        (["not", "an", "object"], "must be a JSON object, not a list"),
    ],
)
def test_recorded_jobs_are_type_checked(data, needle):
    from diffcli.jobs import Job

    with pytest.raises(UsageError, match=needle):
        Job.from_dict(data, source="x.png: recorded job")


def test_recorded_numbers_keep_their_meaning():
    from diffcli.jobs import Job

    job = Job.from_dict({"steps": 4, "cfg": 7, "seed": 3, "unknown": [1]})
    assert (job.steps, job.cfg, job.seed) == (4, 7.0, 3) and isinstance(job.cfg, float)

"""diffcli.settings: every default decided in one place, each value's source recorded."""

from __future__ import annotations

import json

from diffcli.jobs import Job
from diffcli.models import resolve
from diffcli.models.layout import read_layout
from diffcli.settings import model_defaults, settle


def test_the_job_wins_then_the_models_file_then_family_then_built_in(tiny_sd):
    (tiny_sd / "diffcli.json").write_text(json.dumps({"steps": 9}))
    try:
        ref = resolve(str(tiny_sd))
        layout = read_layout(ref.path)
        job, sources = settle(Job(task="img2img", cfg=2.5, image="x"), ref, layout)
    finally:
        (tiny_sd / "diffcli.json").unlink()
    assert (job.cfg, sources["cfg"]) == (2.5, "job")
    assert (job.steps, sources["steps"]) == (9, "diffcli.json")
    assert (job.scheduler, sources["scheduler"]) == ("dpm++2m-karras", "family sd1")
    assert (job.width, sources["width"]) == (layout.native_size, "native size")
    assert (job.strength, sources["strength"]) == (0.6, "built-in")
    assert job.seed is None and "seed" not in sources  # a seed is drawn later, never defaulted


def test_an_input_image_sets_the_size_unless_the_job_does(tiny_sd):
    ref = resolve(str(tiny_sd))
    layout = read_layout(ref.path)
    job, sources = settle(Job(task="img2img", image="x"), ref, layout, input_size=(40, 24))
    assert (job.width, job.height, sources["height"]) == (40, 24, "input image")
    job, sources = settle(Job(task="img2img", image="x", width=16), ref, layout, input_size=(40, 24))
    assert (job.width, job.height, sources["width"], sources["height"]) == (16, 24, "job", "input image")


def test_the_bundled_student_brings_its_own_settings():
    ref = resolve("tiny-lcm")
    defaults = model_defaults(ref, read_layout(ref.path))
    job, sources = settle(Job(prompt="x"), ref, read_layout(ref.path))
    assert (job.steps, job.scheduler, job.shift) == (4, "lcm", 0.5) == (defaults["steps"], "lcm", defaults["shift"])
    assert sources["steps"] == sources["shift"] == "diffcli.json" and sources["cfg_cutoff"] == "built-in"

"""--cache deepcache[:N] (diffcli.cache): the deep UNet branch runs every N-th step only, for one call only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffcli.cache import check, parse, settled
from diffcli.errors import UsageError
from diffcli.jobs import Job
from diffcli.metadata import parameters_fields

import tiny_models
from helpers import cli, heavy_imports, pixels, written

FAST = ["--dtype", "float32", "--quiet", "--no-server"]


class Counter:
    """Counts UNet calls, and calls of a module inside the deep branch (down_blocks[1]'s first resnet),
    with forward hooks on the real modules of the loaded model."""

    def __init__(self, model: Path) -> None:
        from diffcli.device import choose
        from diffcli.models import resolve
        from diffcli.pipelines import load_base

        self.unet = load_base(resolve(str(model)), choose("auto", "float32")).unet  # the engine's cached model
        self.calls = self.deep = 0
        self.handles = [
            self.unet.register_forward_hook(lambda *a: self._count("calls")),
            self.unet.down_blocks[1].resnets[0].register_forward_hook(lambda *a: self._count("deep")),
        ]

    def _count(self, name: str) -> None:
        setattr(self, name, getattr(self, name) + 1)

    def reset(self) -> None:
        self.calls = self.deep = 0

    def close(self) -> None:
        for h in self.handles:
            h.remove()

    def untouched(self) -> bool:
        """Nothing of a cache left on the UNet: no instance `forward` on any module, no pre-hooks."""
        return not self.unet._forward_pre_hooks and not any("forward" in vars(m) for m in self.unet.modules())


def _one(result) -> Path:
    assert result.exit_code == 0, result.stderr
    (path,) = written(result)
    return path


@pytest.fixture(scope="module")
def counted(tiny_sd):
    counter = Counter(tiny_sd)
    yield counter
    counter.close()


def test_cache_values_parse_and_bad_ones_are_usage_errors_before_any_model_loads(tmp_path):
    assert parse("deepcache:4") == ("deepcache", 4) and parse("deepcache") == ("deepcache", None)
    assert settled("deepcache", 3) == "deepcache:3" and settled("none", 3) == "none"
    for bad in ("deepcache:1", "deepcache:0", "deepcache:x", "deepcache:101", "none:3", "fastcache"):
        r = cli("txt2img", "red house", "--cache", bad, *FAST)
        assert r.exit_code == 2 and r.stderr.startswith("diffcli: error:") and r.stderr.count("\n") == 1, r.stderr
    jobs = tmp_path / "jobs.jsonl"  # torch.compile'd code would not see the cache's hooks: refused
    jobs.write_text(json.dumps({"prompt": "red house", "cache": "deepcache:3"}) + "\n")
    r = cli("batch", jobs, "--compile", "-q", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "--compile" in r.stderr and not list(tmp_path.glob("o/*.png")), r.stderr
    probe = heavy_imports("txt2img", "red house", "--cache", "deepcache:1")
    assert "--cache" in probe.stderr and probe.stderr.rstrip().endswith("HEAVY=")
    with pytest.raises(UsageError, match="transformer"):  # SD 3.x / FLUX.1: no UNet branch to cache
        check(Job(cache="deepcache:3"), "flux", "flux-schnell")
    check(Job(cache="none"), "flux", "flux-schnell")


def test_the_deep_branch_runs_every_nth_step_and_nothing_stays_on_the_unet(counted, tiny_sd, tmp_path):
    def run(*args):
        counted.reset()
        path = _one(cli(*args, "-m", tiny_sd, "--seed", "3", "--scheduler", "euler", *FAST, "-o", tmp_path))
        return counted.calls, counted.deep, path

    made = []
    for n in (2, 5):
        calls, deep, path = run("txt2img", "red house", "--steps", "5", "--cache", f"deepcache:{n}")
        assert (calls, deep) == (5, math.ceil(5 / n)) and counted.untouched()
        made.append(path)
    # img2img runs fewer steps than --steps (strength 0.6 of 5: 3); its first step is a full one
    calls, deep, _ = run("img2img", made[0], "red house", "--steps", "5", "--strength", "0.6", "--cache", "deepcache:2")
    assert (calls, deep) == (3, 2) and counted.untouched()
    calls, deep, _ = run("img2img", made[0], "red house", "--steps", "5", "--strength", "0.6")  # and uncached
    assert (calls, deep) == (3, 3)


def test_cached_pixels_are_close_recorded_replayed_and_the_next_plain_job_is_exact(counted, tiny_sd, tmp_path):
    def make(*args):
        return _one(cli("txt2img", "red house", "-m", tiny_sd, "--steps", "4", *args, *FAST, "-o", tmp_path / "o"))

    plain = make("--seed", "7")
    cached = make("--seed", "7", "--cache", "deepcache")  # the default interval, recorded
    other_seed = make("--seed", "8")
    change = np.abs(pixels(cached) - pixels(plain)).mean()
    assert 0 < change < 0.5 * np.abs(pixels(other_seed) - pixels(plain)).mean()
    with Image.open(cached) as im:
        record, parameters = json.loads(im.info["diffcli"]), im.info["parameters"]
    assert record["job"]["cache"] == "deepcache:3" and parameters_fields(parameters)["Cache"] == "deepcache:3"
    assert "Cache" not in parameters_fields(Image.open(plain).info["parameters"])
    replayed = _one(cli("txt2img", "--from", cached, "-m", tiny_sd, *FAST, "-o", tmp_path / "r"))
    assert np.array_equal(pixels(replayed), pixels(cached))
    uncached = _one(cli("txt2img", "--from", cached, "--cache", "none", "-m", tiny_sd, *FAST, "-o", tmp_path / "u"))
    assert np.array_equal(pixels(uncached), pixels(plain))  # after cached jobs: exactly the plain pixels
    # a batch file: lines with and without the cache are not denoised together, each as its command
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        json.dumps({"prompt": "red house", "seed": 7, "cache": "deepcache:3"})
        + "\n"
        + json.dumps({"prompt": "red house", "seed": 7, "num_images": 1})
        + "\n"
    )
    b = cli(
        "batch",
        jobs,
        "-m",
        tiny_sd,
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--dtype",
        "float32",
        "-q",
        "-o",
        tmp_path / "b",
    )
    assert b.exit_code == 0, b.stderr
    made = [Path(p) for p in b.stdout.split()]
    assert [json.loads(Image.open(p).info["diffcli"])["job"]["cache"] for p in made] == ["deepcache:3", "none"]
    assert np.array_equal(pixels(made[0]), pixels(cached)) and np.array_equal(pixels(made[1]), pixels(plain))


def test_a_served_request_takes_the_cache_as_a_job_field():
    from diffcli.serve.api import openai_job
    from diffcli.serve.worker import parse_request

    assert openai_job({"prompt": "x", "cache": "deepcache:2"}).cache == "deepcache:2"  # an OpenAI extra_body field

    job, _ = parse_request({"job": {"prompt": "x", "cache": "deepcache:2"}, "opts": {"out": "/tmp/o"}})
    assert job.cache == "deepcache:2"
    with pytest.raises(UsageError, match="--cache"):
        parse_request({"job": {"prompt": "x", "cache": "deepcache:1"}, "opts": {"out": "/tmp/o"}})


@pytest.fixture(scope="module")
def tiny_cn(tiny_sd, tmp_path_factory) -> Path:
    return tiny_models.build_controlnet(tmp_path_factory.mktemp("models") / "tiny-cn", tiny_sd)


def test_sdxl_inpainting_and_controlnet_models_run_with_the_cache(tiny_sdxl, tiny_inpaint, tiny_sd, tiny_cn, tmp_path):
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(image)
    mask = tmp_path / "mask.png"
    m = np.zeros((32, 32), np.uint8)
    m[8:24, 8:24] = 255
    Image.fromarray(m).save(mask)
    cases = [
        (tiny_sdxl, ["txt2img", "red house"]),
        (tiny_inpaint, ["inpaint", image, "a red door", "--mask", mask]),
        (tiny_sd, ["txt2img", "red house", "--control", f"{tiny_cn}:{image}"]),
    ]
    for model, args in cases:
        counter = Counter(model)
        try:
            made = _one(
                cli(
                    *args,
                    "-m",
                    model,
                    "--steps",
                    "3",
                    "--scheduler",
                    "euler",
                    "--seed",
                    "1",
                    "--cache",
                    "deepcache:2",
                    *FAST,
                    "-o",
                    tmp_path / "o",
                )
            )
            assert (counter.calls, counter.deep) == (3, 2) and counter.untouched(), model
            assert pixels(made).std() > 0
        finally:
            counter.close()

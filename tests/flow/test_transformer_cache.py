"""--cache fbc / taylorseer / magcache: diffusers' cache hooks on a transformer (FLUX.1), on for one
pipeline call; recorded and replayed; the same pixels as plain diffusers with the same hook; a later
uncached job gets exactly the uncached pixels; refused with one line where the family takes none."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from diffcli.cache import parse, settled

from helpers import cli, pixels, written

FAST = ["--dtype", "float32", "--quiet", "-W", "32", "-H", "32"]
STEPS = 8


def _plain(model, hook, seed: int):
    """Plain diffusers' FLUX.1 image with HOOK (a diffusers cache config, or None) on its transformer."""
    import torch
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(model), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if hook is not None:
        pipe.transformer.enable_cache(hook)
    generator = torch.Generator("cpu").manual_seed(seed)
    image = pipe(
        prompt="castle at dusk", num_inference_steps=STEPS, guidance_scale=3.5, width=32, height=32, generator=generator
    ).images[0]
    return np.asarray(image, dtype=np.int16)


def _hook(kind: str, value):
    from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig
    from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

    return {
        "fbc": lambda: FirstBlockCacheConfig(threshold=value),
        "taylorseer": lambda: TaylorSeerCacheConfig(
            cache_interval=value, disable_cache_before_step=3, use_lite_mode=True
        ),
        "magcache": lambda: MagCacheConfig(threshold=value, num_inference_steps=STEPS, mag_ratios=FLUX_MAG_RATIOS),
    }[kind]()


def test_values_parse_settle_and_bad_ones_are_one_line():
    assert parse("fbc:0.2") == ("fbc", 0.2) and parse("taylorseer") == ("taylorseer", None)
    assert [settled(s, 3) for s in ("fbc", "taylorseer", "magcache", "fbc:0.12", "taylorseer:4")] == [
        "fbc:0.05",
        "taylorseer:5",
        "magcache:0.06",
        "fbc:0.12",
        "taylorseer:4",
    ]
    assert settled("magcache", 3, {"magcache": 0.2}) == "magcache:0.2"  # a family's measured parameter
    assert settled("taylorseer:3", 3, {"taylorseer": 4}) == "taylorseer:3"  # what the job names wins
    for bad in ("fbc:0", "fbc:1.5", "fbc:x", "taylorseer:1", "taylorseer:2.5", "magcache:-1"):
        r = cli("txt2img", "red house", "--cache", bad, *FAST)
        assert r.exit_code == 2 and r.stderr.startswith("diffcli: error:") and r.stderr.count("\n") == 1, r.stderr


@pytest.mark.parametrize("kind", ["fbc", "taylorseer", "magcache"])
def test_refused_where_the_family_takes_no_such_cache(kind, tiny_sd, tiny_sd3, tiny_chroma):
    refusing = [(tiny_sd, "Stable Diffusion 1.x"), (tiny_chroma, "Chroma")]
    if kind != "taylorseer":  # SD 3.x takes TaylorSeer only
        refusing.append((tiny_sd3, "Stable Diffusion 3.x"))
    for model, label in refusing:
        r = cli("txt2img", "red house", "-m", model, "--cache", kind, *FAST)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
        assert f"--cache {kind} applies to " in r.stderr and "FLUX.1" in r.stderr and label in r.stderr


def test_taylorseer_on_sd3_is_plain_diffusers_with_the_hook_and_a_context(tiny_sd3, tmp_path):
    """SD 3.x's transformer has no CacheMixin and its pipeline sets no cache context: diffcli applies diffusers'
    TaylorSeer hooks (the attention-output variant: the lite one fails on SD 3.x) and one context for the call, as
    a plain-diffusers user would; the next job is uncached.
    With --cfg-cutoff (the batch halves mid-run) it is refused in one line."""
    import torch
    from diffusers import DiffusionPipeline
    from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    def make(*args):
        r = cli("txt2img", "castle at dusk", "-m", tiny_sd3, "--steps", str(STEPS), "--cfg", "4", "--seed", "5",
                "--negative", "red", *args, *FAST, "-o", tmp_path)  # fmt: skip
        assert r.exit_code == 0, r.stderr
        return pixels(written(r)[0])

    cached, plain = make("--cache", "taylorseer:3"), make()
    pipe = DiffusionPipeline.from_pretrained(str(tiny_sd3), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    call = dict(negative_prompt="red", num_inference_steps=STEPS, guidance_scale=4.0, width=32, height=32)
    expected_plain = pipe("castle at dusk", generator=torch.Generator("cpu").manual_seed(5), **call).images[0]
    apply_taylorseer_cache(pipe.transformer, TaylorSeerCacheConfig(cache_interval=3, disable_cache_before_step=3))
    _set_cache_context(pipe.transformer, CacheContext("inference"))
    expected = pipe("castle at dusk", generator=torch.Generator("cpu").manual_seed(5), **call).images[0]
    assert np.array_equal(cached, np.asarray(expected, dtype=np.int16))
    assert np.array_equal(plain, np.asarray(expected_plain, dtype=np.int16))
    assert not np.array_equal(cached, plain)
    r = cli("txt2img", "red house", "-m", tiny_sd3, "--cache", "taylorseer", "--cfg-cutoff", "0.5", *FAST)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "--cfg-cutoff" in r.stderr, r.stderr


@pytest.mark.parametrize(("kind", "value"), [("fbc", 0.5), ("taylorseer", 3), ("magcache", 0.5)])
def test_cached_pixels_are_plain_diffusers_with_the_hook_and_the_next_plain_job_is_exact(
    kind, value, tiny_flux, tmp_path
):
    def make(*args):
        r = cli("txt2img", "castle at dusk", "-m", tiny_flux, "--steps", str(STEPS), *args, *FAST, "-o", tmp_path)
        assert r.exit_code == 0, r.stderr
        return written(r)[0]

    cached = make("--seed", "5", "--cache", f"{kind}:{value}")
    plain = make("--seed", "5")  # the same process, after the cached job: the hook is gone
    assert np.array_equal(pixels(cached), _plain(tiny_flux, _hook(kind, value), 5))
    assert np.array_equal(pixels(plain), _plain(tiny_flux, None, 5))
    assert not np.array_equal(pixels(cached), pixels(plain))  # the cache changed something
    with Image.open(cached) as im:
        assert json.loads(im.info["diffcli"])["job"]["cache"] == f"{kind}:{value}"
        assert f"Cache: {kind}:{value}" in im.info["parameters"]
    again = cli("txt2img", "--from", cached, "-o", tmp_path / "again", "--quiet")
    assert again.exit_code == 0 and np.array_equal(pixels(written(again)[0]), pixels(cached))

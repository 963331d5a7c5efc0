"""--prompt-syntax a1111 (the default): weights, BREAK, long prompts in chunks; plain prompts unchanged."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from diffcli.prompts import parse, take_lora_tags

from helpers import cli, pixels

FAST = ("--steps", "1", "--cfg", "1", "--scheduler", "euler", "--dtype", "float32", "--seed", "5")


@pytest.mark.parametrize(
    "text, runs",
    [
        ("(red:1.4) house, (night:0.6)", [("red", 1.4), (" house, ", 1.0), ("night", 0.6)]),
        ("((castle)) at [dusk]", [("castle", 1.1 * 1.1), (" at ", 1.0), ("dusk", 1 / 1.1)]),
        (r"a \(castle\) (at:1.5", [("a (castle) ", 1.0), ("at:1.5", 1.1)]),  # unclosed: to the end, x1.1
        ("castle BREAK dusk", [("castle", 1.0), ("BREAK", -1.0), ("dusk", 1.0)]),
        ("castle: at dusk", [("castle: at dusk", 1.0)]),
    ],
)
def test_a1111_grammar(text, runs):
    got = parse(text)
    assert [t for t, _ in got] == [t for t, _ in runs]
    assert np.allclose([w for _, w in got], [w for _, w in runs])


def test_lora_tags_leave_the_prompt():
    assert take_lora_tags("castle <lora:style:0.7>, at dusk <lora:b>") == ("castle , at dusk", ["style:0.7", "b"])


def _run(model, prompt, out, *extra):
    r = cli("txt2img", prompt, "-m", model, "-o", out, *FAST, "--json", *extra)
    assert r.exit_code == 0, r.stderr
    return r, pixels(json.loads(r.stdout)["path"])


def test_weights_break_and_plain_prompts(tiny_sd, tmp_path):
    r, plain = _run(tiny_sd, "castle at dusk", tmp_path, "--prompt-syntax", "plain")
    assert json.loads(Image.open(json.loads(r.stdout)["path"]).info["diffcli"])["job"]["prompt_syntax"] == "plain"
    _, same = _run(tiny_sd, "castle at dusk", tmp_path)  # no syntax: the default gives today's pixels
    assert np.array_equal(plain, same)
    _, one = _run(tiny_sd, "(castle:1.0) at dusk", tmp_path)  # weight 1 is no weight
    assert np.array_equal(plain, one)
    _, weighted = _run(tiny_sd, "(castle:1.6) at dusk", tmp_path)
    _, broken = _run(tiny_sd, "castle BREAK at dusk", tmp_path)
    assert not np.array_equal(plain, weighted) and not np.array_equal(plain, broken)


def test_long_prompt_is_read_to_the_end(tiny_sd, tmp_path):
    """tiny_sd reads 16 tokens: the last word of a 200-token prompt changes the image under a1111 (chunks);
    plain cuts the prompt off, and its warning says so."""
    head = " ".join(["castle at dusk a red door"] * 34)  # 6 tokens each
    images = {}
    for syntax, last in (("a1111", "tree"), ("a1111", "house"), ("plain", "tree")):
        r, images[syntax, last] = _run(tiny_sd, f"{head} {last}", tmp_path, "--prompt-syntax", syntax)
        assert ("the rest is ignored" in r.stderr) == (syntax == "plain")
    assert int(re.search(r"the prompt is (\d+) tokens", r.stderr).group(1)) >= 200
    assert not np.array_equal(images["a1111", "tree"], images["a1111", "house"])
    assert not np.array_equal(images["a1111", "tree"], images["plain", "tree"])
    # denoised together with a one-chunk prompt, the long one still gets its image from alone
    lines = tmp_path / "jobs.jsonl"
    lines.write_text(json.dumps({"prompt": "castle"}) + "\n" + json.dumps({"prompt": f"{head} tree"}) + "\n")
    r = cli("batch", lines, "-m", tiny_sd, "-o", tmp_path / "batch", "--batch-size", "2", *FAST, "--quiet")
    assert r.exit_code == 0, r.stderr
    assert np.array_equal(pixels(r.stdout.split()[1]), images["a1111", "tree"])


def test_sdxl_unweighted_embeddings_are_diffusers_own(tiny_sdxl, tmp_path):
    """Our encoding at weight 1 is exactly diffusers' encode_prompt (both encoders and the pooled output);
    a weighted SDXL prompt runs and changes the image."""
    import torch

    from diffcli.device import choose
    from diffcli.models import resolve
    from diffcli.pipelines import load_base
    from diffcli.prompts import encode

    pipe = load_base(resolve(str(tiny_sdxl)), choose("cpu", "float32"))
    ours, pooled = encode(pipe, "castle at dusk")
    theirs, _, their_pooled, _ = pipe.encode_prompt("castle at dusk", device="cpu", do_classifier_free_guidance=False)
    assert torch.equal(ours, theirs) and torch.equal(pooled, their_pooled)
    _, plain = _run(tiny_sdxl, "castle at dusk", tmp_path)
    _, weighted = _run(tiny_sdxl, "castle at (dusk:1.5)", tmp_path)
    assert not np.array_equal(plain, weighted)


def test_bad_prompt_syntax_is_a_usage_error(tiny_sd, tmp_path):
    r = cli("txt2img", "castle", "--prompt-syntax", "compel", "-m", tiny_sd, "-o", tmp_path)
    assert r.exit_code == 2 and "--prompt-syntax must be one of a1111, plain" in r.stderr

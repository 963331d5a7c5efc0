"""A family from another package: tests/families/plugin is a real installable package whose
`diffcli.families` entry point adds Stable Diffusion 1.x saved with diffusers' perturbed-attention-guidance
pipeline. Installed with pip into a folder on the path, it is found, recognised, and generates through
`diffcli batch` and through a real `diffcli serve`, with no change to diffcli."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffcli import families
from diffcli.errors import UsageError
from diffcli.models.layout import read_layout

from helpers import cli, pixels

PLUGIN = Path(__file__).parent / "plugin"
FAST = ["--dtype", "float32"]


def _on_path(site: Path):
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    families.families.cache_clear()


def _off_path(site: Path, module: str | None = None):
    sys.path.remove(str(site))
    if module:
        sys.modules.pop(module, None)
    importlib.invalidate_caches()
    families.families.cache_clear()


@pytest.fixture(scope="module")
def tiny_pag(tiny_sd, tmp_path_factory) -> Path:
    """The tiny SD model saved as a PAG pipeline (the same weights; model_index names the PAG class)."""
    path = tmp_path_factory.mktemp("models") / "tiny-pag"
    shutil.copytree(tiny_sd, path)
    index = json.loads((path / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionPAGPipeline"
    (path / "model_index.json").write_text(json.dumps(index))
    return path


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The plugin package installed (pip, from a copy of its source) into a folder of its own."""
    src = tmp_path_factory.mktemp("plugin-src") / "plugin"
    shutil.copytree(PLUGIN, src)
    site = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    done = subprocess.run([*pip, "--target", str(site), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert list(site.glob("diffcli_pag_family-*.dist-info/entry_points.txt"))
    return site


@pytest.fixture
def installed(plugin_site):
    _on_path(plugin_site)
    yield plugin_site
    _off_path(plugin_site, "diffcli_pag_family")


def test_without_the_plugin_the_model_is_plain_sd1(tiny_pag):
    assert families.get("sd1-pag") is None
    assert read_layout(tiny_pag).family == "sd1"


def test_the_plugin_family_is_found_and_recognises_its_models(installed, tiny_pag, tiny_sd):
    family = families.get("sd1-pag")
    assert family is not None and family.label.startswith("Stable Diffusion 1.x with perturbed")
    assert read_layout(tiny_pag).family == "sd1-pag"
    assert read_layout(tiny_sd).family == "sd1"  # the built-in families still recognise their own
    assert read_layout(tiny_pag).recommended()["steps"] == 3


def _record(path: str) -> dict:
    return json.loads(Image.open(path).text["diffcli"])["job"]


def test_batch_generates_with_the_plugin_family(installed, tiny_pag, tiny_sd, tmp_path):
    from diffcli.pipelines import release_models

    release_models()
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"prompt": "red house", "seed": 5}) + "\n")
    b = cli("batch", jobs, "-m", tiny_pag, *FAST, "-o", tmp_path / "b", "--json")
    assert b.exit_code == 0, b.stderr
    (made,) = [json.loads(line)["path"] for line in b.stdout.splitlines()]
    record = _record(made)
    # the family's defaults, and the pipeline of its own task table (PAG: its pixels are not plain SD's)
    assert (record["steps"], record["cfg"], record["scheduler"]) == (3, 2.5, "euler")
    plain = cli(
        "txt2img", "red house", "--seed", "5", "-m", tiny_sd, "--steps", "3", "--cfg", "2.5", "--scheduler", "euler",
        *FAST, "-o", tmp_path / "plain", "-q",
    )  # fmt: skip
    assert plain.exit_code == 0, plain.stderr
    assert not np.array_equal(pixels(made), pixels(plain.stdout.strip()))
    again = cli("txt2img", "red house", "--seed", "5", "-m", tiny_pag, *FAST, "-o", tmp_path / "again", "-q")
    assert np.array_equal(pixels(made), pixels(again.stdout.strip()))


def test_a_server_generates_with_the_plugin_family(plugin_site, tiny_pag, tmp_path, tmp_path_factory):
    import os
    import tempfile

    sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
    from serving import RunningServer, server_env

    sys.path.pop(0)
    env = server_env(tmp_path_factory.mktemp("serverhome"))
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    directory = Path(tempfile.mkdtemp(prefix="dcs", dir="/tmp"))
    server = RunningServer(directory, env, ["--idle", "5m"])
    try:
        p = server.cli("txt2img", "red house", "-m", tiny_pag, "--seed", "5", *FAST, "-o", tmp_path / "s", "-q")
        assert p.returncode == 0, p.stderr
        assert [m["model"] for m in server.status()["models"]] == [str(tiny_pag)]  # the server ran it
        record = _record(p.stdout.strip())
        assert (record["steps"], record["cfg"], record["scheduler"]) == (3, 2.5, "euler")
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _fake_install(site: Path, name: str, entry: str) -> None:
    """An installed distribution as pip leaves one: a dist-info folder with its entry points."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[diffcli.families]\n{entry}\n")


def test_a_broken_plugin_is_one_clear_error(tmp_path):
    _fake_install(tmp_path, "broken_family", "broken = no_such_module_here")
    _on_path(tmp_path)
    try:
        with pytest.raises(UsageError, match="family plugin 'broken' .* failed to load"):
            families.families()
    finally:
        _off_path(tmp_path)


def test_a_plugin_may_not_take_a_built_in_name(tmp_path):
    (tmp_path / "taker.py").write_text("from diffcli.families import Family\nFAMILIES = (Family('flux', 'mine'),)\n")
    _fake_install(tmp_path, "taker", "taker = taker")
    _on_path(tmp_path)
    try:
        with pytest.raises(UsageError, match="the family name 'flux' is taken"):
            families.families()
    finally:
        _off_path(tmp_path, "taker")

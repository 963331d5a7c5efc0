"""The 2026 flow-matching families (issue 29) through a real `diffcli serve`: one image of each, made by the
server for a CLI client, has the pixels the same command makes in-process (--no-server)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from helpers import cli, pixels, written

# fixture -> (the cfg the job asks for, its negative prompt)
MODELS = {
    "tiny_chroma": ("4.0", "red"),
    "tiny_zimage": ("3.0", "red"),
    "tiny_qwen_image": ("2.5", "red"),
    "tiny_flux2_klein": ("1.0", "red"),
}
FAST = ["--steps", "2", "--dtype", "float32", "-W", "32", "-H", "32", "--seed", "7", "--quiet"]


def test_each_family_makes_the_same_pixels_served_and_in_process(request, tmp_path, tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
    from serving import RunningServer, server_env

    sys.path.pop(0)
    models = {name: request.getfixturevalue(name) for name in MODELS}
    directory = Path(tempfile.mkdtemp(prefix="dcs", dir="/tmp"))  # a short path: socket paths are limited
    server = RunningServer(directory, server_env(tmp_path_factory.mktemp("serverhome")), ["--idle", "5m"])
    try:
        for name, model in models.items():
            cfg, negative = MODELS[name]
            args = ["castle at dusk", "-m", model, "--cfg", cfg, "--negative", negative, *FAST]
            served = server.cli("txt2img", *args, "-o", tmp_path / name / "served")
            assert served.returncode == 0, served.stderr + server.log()
            assert str(model) in [m["model"] for m in server.status()["models"]]  # the server ran it
            here = cli("txt2img", *args, "--no-server", "-o", tmp_path / name / "here")
            assert here.exit_code == 0, here.stderr
            made, local = Path(served.stdout.strip()), written(here)[0]
            assert np.array_equal(pixels(made), pixels(local)), name
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)

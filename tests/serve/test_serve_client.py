"""The CLI through a running server: the same stdout, stderr events, files, pixels, errors and exit codes
as without one; concurrent clients; Ctrl-C of one client; no torch in the client."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import default_sigint, heavy_imports, pixels, wait_for_first_step

FAST = ["--steps", "2", "--dtype", "float32"]


def _events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def _shape(events: list[dict]) -> list:
    """The event stream without its clock and the load's cache flag."""
    return [{k: v for k, v in e.items() if k not in ("t", "cached", "load_s", "total_s")} for e in events]


def _record(path: Path) -> tuple[str, dict]:
    with Image.open(path) as img:
        return img.info["parameters"], json.loads(img.info["diffcli"])


def _done(server) -> int:
    return server.status()["jobs_done"]


def test_txt2img_through_the_server_is_the_same_as_without(server, tiny_sd, tmp_path):
    args = ["txt2img", "castle at dusk", "-m", tiny_sd, "--seed", "5", "-n", "2", *FAST]
    before = _done(server)
    served = server.cli(*args, "-o", "shots", cwd=tmp_path)
    assert served.returncode == 0, served.stderr + server.log()
    assert _done(server) == before + 1  # it really went through the server
    local = server.cli(*args, "-o", "local", "--no-server", cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    assert _done(server) == before + 1

    assert served.stdout.splitlines() == ["shots/00000-5-castle_at_dusk.png", "shots/00001-6-castle_at_dusk.png"]
    assert local.stdout.replace("local/", "shots/") == served.stdout
    assert _shape(_events(served.stderr)) == [
        {**e, "path": e["path"].replace("local/", "shots/")} if "path" in e else e
        for e in _shape(_events(local.stderr))
    ]
    for name in ("00000-5-castle_at_dusk.png", "00001-6-castle_at_dusk.png"):
        a, b = tmp_path / "shots" / name, tmp_path / "local" / name
        assert np.array_equal(pixels(a), pixels(b))
        assert _record(a) == _record(b)
    assert sorted(p.name for p in (tmp_path / "shots").iterdir()) == sorted(
        p.name for p in (tmp_path / "local").iterdir()
    )


def test_json_output_and_img2img_with_a_relative_input(server, tiny_sd, tmp_path):
    Image.new("RGB", (64, 48), (200, 40, 40)).save(tmp_path / "in.png")
    args = ["img2img", "in.png", "watercolor", "-m", tiny_sd, "--strength", "0.5", "--seed", "1", "--json", *FAST]
    served = server.cli(*args, "-o", "a/", cwd=tmp_path)
    local = server.cli(*args, "-o", "b/", "--no-server", cwd=tmp_path)
    assert served.returncode == 0 and local.returncode == 0, served.stderr + local.stderr
    (a,) = [json.loads(line) for line in served.stdout.splitlines()]
    (b,) = [json.loads(line) for line in local.stdout.splitlines()]
    assert a["path"].startswith("a/") and {**a, "path": None} == {**b, "path": None}
    assert np.array_equal(pixels(tmp_path / a["path"]), pixels(tmp_path / b["path"]))
    assert _record(tmp_path / a["path"])[1]["job"]["image"] == str(tmp_path / "in.png")
    assert [e["message"] for e in _events(served.stderr) if e["event"] == "warning"] == [
        e["message"] for e in _events(local.stderr) if e["event"] == "warning"
    ]


def test_the_client_does_not_import_torch(server, tiny_sd, tmp_path, monkeypatch):
    server.use_env(monkeypatch)
    before = _done(server)
    p = heavy_imports("txt2img", "castle", "-m", str(tiny_sd), "--seed", "1", "-o", str(tmp_path), "--quiet", *FAST)
    assert p.stderr.splitlines()[-1] == "HEAVY=", p.stderr
    assert _done(server) == before + 1
    assert len(list(tmp_path.glob("*.png"))) == 1


@pytest.mark.parametrize(
    "args, files",
    [
        (["--steps", "0"], []),
        (["-W", "60"], []),  # not a multiple of the model's 8: found by settle
        (["-o", "taken.png"], ["taken.png"]),  # found by the server when it plans the names: named as typed
    ],
)
def test_bad_input_gives_the_same_error_and_exit_code(server, tiny_sd, tmp_path, args, files):
    for name in files:
        (tmp_path / name).write_bytes(b"x")
    base = ["txt2img", "castle", "-m", tiny_sd, "--seed", "1", "--dtype", "float32", "--quiet"]
    served = server.cli(*base, *args, cwd=tmp_path)
    local = server.cli(*base, *args, "--no-server", cwd=tmp_path)
    assert served.returncode == local.returncode == 2
    assert served.stderr == local.stderr and served.stderr.count("\n") == 1, (served.stderr, local.stderr)
    assert served.stdout == local.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)


def test_upscale_through_the_server_is_the_same_as_without(server, tiny_sd, tmp_path):
    Image.new("RGB", (32, 24), (40, 160, 90)).save(tmp_path / "small.png")
    args = [
        "upscale",
        "small.png",
        "-m",
        tiny_sd,
        "--method",
        "tiled",
        "--scale",
        "2",
        "--seed",
        "3",
        "--json",
        "--steps",
        "4",
        "--dtype",
        "float32",
    ]
    before = _done(server)
    served = server.cli(*args, "-o", "a/", cwd=tmp_path)
    assert served.returncode == 0, served.stderr + server.log()
    assert _done(server) == before + 1  # it really went through the server
    local = server.cli(*args, "-o", "b/", "--no-server", cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    (a,) = [json.loads(line) for line in served.stdout.splitlines()]
    (b,) = [json.loads(line) for line in local.stdout.splitlines()]
    assert a["path"].startswith("a/") and {**a, "path": None} == {**b, "path": None}
    assert pixels(tmp_path / a["path"]).shape == (48, 64, 3)
    assert np.array_equal(pixels(tmp_path / a["path"]), pixels(tmp_path / b["path"]))
    assert _record(tmp_path / a["path"]) == _record(tmp_path / b["path"])
    assert _shape(_events(served.stderr)) == [
        {**e, "path": e["path"].replace("b/", "a/")} if "path" in e else e for e in _shape(_events(local.stderr))
    ]
    bad = ["upscale", "small.png", "--scale", "1", "--quiet"]
    served, local = server.cli(*bad, cwd=tmp_path), server.cli(*bad, "--no-server", cwd=tmp_path)
    assert served.returncode == local.returncode == 2 and served.stderr == local.stderr


def test_concurrent_clients_each_get_their_own_images(server, tiny_sd, tmp_path):
    procs = [
        server.popen(
            "txt2img", "castle", "-m", tiny_sd, "--seed", str(seed), "-o", "out", "--quiet", *FAST, cwd=tmp_path
        )
        for seed in (11, 12, 13)
    ]
    results = [(p, *p.communicate(timeout=120)) for p in procs]
    for seed, (p, stdout, stderr) in zip((11, 12, 13), results):
        assert p.returncode == 0, stderr
        (line,) = stdout.splitlines()
        assert line.startswith("out/") and line.endswith(f"-{seed}-castle.png")
        assert _record(tmp_path / line)[1]["job"]["seed"] == seed
    assert len(list((tmp_path / "out").glob("*.png"))) == 3


def test_ctrl_c_cancels_only_that_clients_job(server, tiny_sd, tmp_path):
    slow = server.popen(
        "txt2img",
        "castle",
        "-m",
        tiny_sd,
        "--steps",
        "400",
        "--seed",
        "1",
        "--scheduler",
        "euler",
        "-o",
        "slow",
        "--json",
        "--dtype",
        "float32",
        "--save-partial",
        cwd=tmp_path,
        preexec_fn=default_sigint,
    )
    deadline = time.time() + 60
    for line in slow.stderr:
        if '"step": 3,' in line:
            break
        assert time.time() < deadline
    quick = server.popen(
        "txt2img", "castle", "-m", tiny_sd, "--seed", "2", "-o", "quick", "--json", *FAST, cwd=tmp_path
    )
    deadline = time.time() + 60
    while server.status()["queued"] < 1:  # the quick one waits behind the slow one
        assert time.time() < deadline and quick.poll() is None
        time.sleep(0.05)
    slow.send_signal(signal.SIGINT)
    stderr, stdout = slow.stderr.read(), slow.stdout.read()  # (what the loop above buffered included)
    slow.wait(timeout=60)
    assert slow.returncode == 130 and stderr.rstrip().endswith("diffcli: error: interrupted"), stderr
    (saved,) = [json.loads(line)["path"] for line in stdout.splitlines()]
    assert saved.startswith("slow/") and saved.endswith("-partial.png")
    assert [p.name for p in (tmp_path / "slow").iterdir()] == [Path(saved).name]  # no final image, no temp file

    stdout, stderr = quick.communicate(timeout=60)
    assert quick.returncode == 0, stderr
    assert any(e["event"] == "queued" for e in _events(stderr))
    assert len(stdout.splitlines()) == 1 and (tmp_path / json.loads(stdout)["path"]).is_file()
    assert server.proc.poll() is None


def test_files_get_the_clients_umask(server, tiny_sd, tmp_path):
    import os
    import stat

    p = server.cli(
        "txt2img",
        "castle",
        "-m",
        tiny_sd,
        "--seed",
        "1",
        "-o",
        tmp_path,
        "--quiet",
        *FAST,
        preexec_fn=lambda: os.umask(0o077),
    )
    assert p.returncode == 0, p.stderr
    assert stat.S_IMODE(os.stat(p.stdout.strip()).st_mode) == 0o600  # as a local run with umask 077 makes it


def test_diffcli_server_auto_starts_one(sock_dir, tiny_sd, tmp_path):
    import os
    import subprocess
    import sys

    from diffcli.serve.client import request, wait_gone

    path = sock_dir / "s.sock"
    env = {**os.environ, "DIFFCLI_SERVER": "auto", "DIFFCLI_SERVER_SOCKET": str(path), "DIFFCLI_SERVER_IDLE": "2m"}
    try:
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "diffcli",
                "txt2img",
                "castle",
                "-m",
                str(tiny_sd),
                "--seed",
                "1",
                "-o",
                str(tmp_path),
                "--quiet",
                *FAST,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert p.returncode == 0, p.stderr
        status = request("status", path)
        assert status["jobs_done"] == 1 and status["idle_stop_s"] == 120  # the job ran on the server it started
        assert len(list(tmp_path.glob("*.png"))) == 1
    finally:
        if request("stop", path) is not None:
            assert wait_gone(path, timeout=30)


def test_a_client_killed_outright_takes_its_job_with_it(server, tiny_sd, tmp_path):
    client = server.popen(
        "txt2img",
        "castle",
        "-m",
        tiny_sd,
        "--steps",
        "400",
        "--scheduler",
        "euler",
        "-o",
        "out",
        "--json",
        "--dtype",
        "float32",
        cwd=tmp_path,
    )
    wait_for_first_step(client.stderr, timeout=60)
    failed = server.status()["jobs_failed"]
    client.kill()
    client.wait(timeout=30)
    deadline = time.time() + 30
    while server.status()["current"] is not None:  # cancelled at its next step, not after 400
        assert time.time() < deadline
        time.sleep(0.1)
    assert server.status()["jobs_failed"] == failed + 1
    assert not list((tmp_path / "out").glob("*.png"))


def test_outpaint_through_the_server_is_the_same_as_without(server, tiny_sd, tmp_path):
    Image.new("RGB", (32, 24), (40, 160, 90)).save(tmp_path / "in.png")
    args = [
        "outpaint",
        tmp_path / "in.png",
        "meadow",
        "-m",
        tiny_sd,
        "--extend",
        "8,0,8,8",
        "--seed",
        "3",
        "--quiet",
        *FAST,
    ]
    before = _done(server)
    served = server.cli(*args, "-o", tmp_path / "a", cwd=tmp_path)
    assert served.returncode == 0, served.stderr + server.log()
    assert _done(server) == before + 1
    # a process of its own, as the server's: in this one, earlier tests may have changed torch's thread
    # count, and a float sum in another order can move a pixel by one level
    local = server.cli(*args, "-o", tmp_path / "b", "--no-server", cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    a, b = Path(served.stdout.strip()), Path(local.stdout.strip())
    assert _record(a) == _record(b)
    assert np.array_equal(pixels(a), pixels(b))
    assert pixels(a).shape == (32, 48, 3) and (pixels(a)[:24, 8:40] == (40, 160, 90)).all()


def test_lora_sets_switch_between_jobs_on_the_server(server, tiny_sd, tmp_path):
    """One resident pipeline: a job with a LoRA, then one without, gets the base's pixels again."""
    import lora_files

    lora = lora_files.build_peft_lora(tiny_sd, tmp_path / "style.safetensors", seed=4)
    args = ["txt2img", "castle at dusk", "-m", tiny_sd, "--seed", "5", "--quiet", *FAST]
    paths, before = [], _done(server)
    for i, extra in enumerate(([], ["--lora", f"{lora}:0.7"], [])):
        served = server.cli(*args, *extra, "-o", f"o{i}/", cwd=tmp_path)
        assert served.returncode == 0, served.stderr + server.log()
        paths.append(tmp_path / served.stdout.strip())
    assert _done(server) == before + 3  # all three ran on the server, on its one loaded pipeline
    base, styled, base_again = (pixels(p) for p in paths)
    assert np.array_equal(base, base_again) and not np.array_equal(base, styled)
    assert _record(paths[1])[1]["model"]["loras"][0]["weight"] == 0.7


def test_a_control_job_runs_on_the_server_with_a_relative_map(server, tiny_sd, tmp_path):
    """The client settles --control (the map's path made absolute) and the server runs the ControlNet
    pipeline on its loaded model: the same pixels as a run in this process."""
    from PIL import ImageDraw

    import tiny_models

    cn = tiny_models.build_controlnet(tmp_path / "cn", tiny_sd)
    im = Image.new("RGB", (32, 32))
    ImageDraw.Draw(im).rectangle([6, 8, 20, 27], fill=(255, 255, 255))
    im.save(tmp_path / "map.png")
    args = ["txt2img", "castle", "-m", tiny_sd, "--seed", "3", "--quiet", *FAST]
    before = _done(server)
    served = server.cli(*args, "--control", f"{cn}:map.png:0.8", "-o", "s/", cwd=tmp_path)
    assert served.returncode == 0, served.stderr + server.log()
    assert _done(server) == before + 1
    path = tmp_path / served.stdout.strip()
    assert _record(path)[1]["job"]["control"] == [f"{cn}:{tmp_path / 'map.png'}:0.8:0.0:1.0"]
    local = server.cli(*args, "--control", f"{cn}:{tmp_path / 'map.png'}:0.8", "--no-server", "-o", tmp_path / "l")
    assert local.returncode == 0, local.stderr  # (a process of its own: see the outpaint test)
    assert np.array_equal(pixels(path), pixels(local.stdout.strip()))

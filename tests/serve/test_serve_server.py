"""The server's own life and its boundary: who may connect, what a request may say, stopping, idling,
a kill -9 in the middle of a job, and the models it keeps."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffcli.serve.client import connect, open_channel

from helpers import wait_for_first_step

FAST = ["--steps", "2", "--dtype", "float32"]
as_root = pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user")


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, what
        time.sleep(0.05)


def test_the_socket_is_private(start_server):
    server = start_server()
    st = os.lstat(server.path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()
    assert not os.stat(server.path.parent).st_mode & 0o022


@as_root
def test_a_socket_of_another_user_is_refused(sock_dir, monkeypatch, capsys):
    path = sock_dir / "s.sock"
    planted = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    planted.bind(str(path))
    planted.listen(1)
    os.chown(path, 65534, 65534)
    monkeypatch.setenv("DIFFCLI_SERVER_SOCKET", str(path))
    try:
        assert connect() is None  # the CLI runs the job itself
        assert "belongs to another user" in capsys.readouterr().err
        p = subprocess.run([sys.executable, "-m", "diffcli", "serve"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and "belongs to another user" in p.stderr
    finally:
        planted.close()


@as_root
def test_another_uid_cannot_submit_jobs(start_server):
    server = start_server()
    os.chmod(server.path.parent, 0o755)  # opened wide on purpose: only the uid check is left
    os.chmod(server.path, 0o666)
    probe = "\n".join(
        [
            "import socket, sys",
            "s = socket.socket(socket.AF_UNIX)",
            "s.connect(sys.argv[1])",
            "try:",
            '    s.sendall(b\'{"op": "status"}\\n\')',
            "    print(repr(s.recv(4096)))",
            "except (ConnectionResetError, BrokenPipeError):",
            "    print(repr(b''))",
        ]
    )
    python = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(p)), None)
    if python is None:
        pytest.skip("no system python that another user may run")
    p = subprocess.run(
        [python, "-c", probe, str(server.path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        env={},
        preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)),
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "b''"  # closed without a word
    _wait(lambda: "refused a connection from uid 65534" in server.log(), 10, server.log())


def _send(server, message: dict) -> dict:
    channel, hello = open_channel(server.path)
    assert hello["compat"] and hello["pid"] == server.proc.pid
    channel.send(message)
    answer = channel.receive(timeout=30)
    while answer["type"] != "error":  # skip progress, if a bad request got that far
        answer = channel.receive(timeout=30)
    channel.close()
    return answer


@pytest.mark.parametrize(
    "job, opts, message",
    [
        ({"prompt": "x", "steps": 0}, {}, "--steps must be between 1 and 1000"),
        ({"prompt": "x", "steps": "3"}, {}, "'steps' must be an integer"),
        ({"prompt": "x", "sneaky": 1}, {}, "unknown job field(s) sneaky"),
        ({"prompt": "x"}, {"out": "relative/dir/"}, "--out must be an absolute path"),
        ({"prompt": "x"}, {"batch_key": "k"}, "unknown option 'batch_key'"),
        ({"task": "img2img", "prompt": "x", "image": "in.png"}, {}, "image must be an absolute path"),
        ({"prompt": "x", "model": "no/such-model"}, {"offline": True}, "no/such-model"),
    ],
)
def test_the_server_checks_every_request_itself(server, tmp_path, job, opts, message):
    answer = _send(server, {"op": "run", "job": job, "opts": {"out": str(tmp_path) + "/", **opts}})
    assert answer["kind"] == "UsageError" and answer["exit_code"] == 2
    assert message in answer["message"], answer
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "upscale, opts, message",
    [
        ({"image": "rel.png"}, {}, "image must be an absolute path"),
        ({"image": "/abs.png", "scale": "2"}, {}, "upscale field 'scale' must be an int"),
        ({"image": "/abs.png", "sneaky": 1}, {}, "unknown upscale field 'sneaky'"),
        ({"image": "/abs.png", "scale": 1}, {}, "--scale must be between 2"),
        ({"image": "/abs.png"}, {"json": "yes"}, "option 'json' must be a bool"),
    ],
)
def test_the_server_checks_every_upscale_request_itself(server, tmp_path, upscale, opts, message):
    answer = _send(server, {"op": "run", "upscale": upscale, "opts": {"out": str(tmp_path) + "/", **opts}})
    assert answer["kind"] == "UsageError" and answer["exit_code"] == 2
    assert message in answer["message"], answer


def test_a_message_nested_many_thousand_deep_gets_an_answer(server):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(server.path))
        reader = sock.makefile("rb")
        assert json.loads(reader.readline())["type"] == "hello"
        sock.sendall(b'{"op": "run", "job": ' + b"[" * 100_000 + b"\n")
        answer = json.loads(reader.readline())
    assert answer["type"] == "error" and answer["exit_code"] == 2, answer
    assert answer["message"] == "bad request: a message nested too deeply"
    assert server.status() is not None


def test_kill_9_mid_job_leaves_no_files(start_server, tiny_sd, tmp_path):
    server = start_server()
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
    os.kill(server.proc.pid, signal.SIGKILL)
    stderr, stdout = client.stderr.read(), client.stdout.read()  # (what the loop above buffered included)
    client.wait(timeout=60)
    assert client.returncode == 1 and stdout == ""
    assert stderr.rstrip().endswith(
        "diffcli: error: the diffcli server stopped before the job finished (see its "
        "log); run the command again, or pass --no-server"
    ), stderr
    assert not (tmp_path / "out").exists()  # no image, no temp file, no reservation left behind
    assert list(tmp_path.iterdir()) == []


def test_detach_status_and_stop(sock_dir, tmp_path):
    env = {**os.environ, "DIFFCLI_SERVER_SOCKET": str(sock_dir / "s.sock")}

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "diffcli", "serve", *args], capture_output=True, text=True, env=env, timeout=90
        )

    p = run("--detach", "--idle", "2m", "--keep", "3")
    assert p.returncode == 0 and p.stdout == "" and "started" in p.stderr, p.stderr
    status = json.loads(run("--status", "--json").stdout)
    assert status["running"] and status["keep"] == 3 and status["idle_stop_s"] == 120 and status["queued"] == 0
    assert status["compatible"] is True and status["models"] == []
    assert "running: pid" in run("--status").stdout
    pid = status["pid"]
    p = run("--stop")
    assert p.returncode == 0 and "stopped" in p.stderr, p.stderr
    _wait(
        lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2],
        30,
        "server still running",
    )
    assert not (sock_dir / "s.sock").exists()
    p = run("--status")
    assert p.returncode == 1 and p.stdout.startswith("not running")
    assert "server.log" in os.listdir(sock_dir) or "s.log" in os.listdir(sock_dir)


def test_an_idle_server_stops_by_itself(start_server):
    server = start_server("--idle", "1s")
    server.proc.wait(timeout=30)
    assert server.proc.returncode == 0, server.log()
    assert "idle for 1s; stopping" in server.log()
    assert not server.path.exists()


def test_a_second_server_on_the_same_socket_is_refused(start_server):
    server = start_server()
    p = subprocess.run(
        [sys.executable, "-m", "diffcli", "serve"], capture_output=True, text=True, env=server.env, timeout=60
    )
    assert p.returncode == 2 and "already running" in p.stderr
    assert server.status() is not None


def test_keep_forgets_the_least_recently_used_model(start_server, tiny_sd, tmp_path):
    import shutil

    other = tmp_path / "other-sd"
    shutil.copytree(tiny_sd, other)
    server = start_server("--keep", "1")
    for model in (tiny_sd, other):
        p = server.cli("txt2img", "castle", "-m", model, "--seed", "1", "-o", tmp_path / "o", "--quiet", *FAST)
        assert p.returncode == 0, p.stderr
    assert [m["model"] for m in server.status()["models"]] == [str(other)]


def test_max_memory_keeps_the_weights_of_loaded_models_within_it(start_server, tiny_sd, tmp_path):
    import shutil

    other = tmp_path / "other-sd"
    shutil.copytree(tiny_sd, other)
    on_disk = sum(p.stat().st_size for p in tiny_sd.rglob("*.safetensors"))  # float32 weights, as loaded
    server = start_server("--keep", "3", "--max-memory", str(int(on_disk * 1.5)))
    for model in (tiny_sd, other):
        p = server.cli("txt2img", "castle", "-m", model, "--seed", "1", "-o", tmp_path / "o", "--quiet", *FAST)
        assert p.returncode == 0, p.stderr
    (held,) = server.status()["models"]  # two would be over the budget; --keep 3 alone would keep both
    assert held["model"] == str(other) and 0.9 * on_disk < held["bytes"] <= on_disk
    bad = subprocess.run(
        [sys.executable, "-m", "diffcli", "serve", "--max-memory", "lots"],
        capture_output=True,
        text=True,
        env=server.env,
        timeout=60,
    )
    assert bad.returncode == 2 and "invalid --max-memory 'lots'" in bad.stderr


def test_a_client_in_another_environment_runs_by_itself(start_server, tmp_path, monkeypatch):
    server = start_server()
    server.use_env(monkeypatch)
    monkeypatch.setenv("DIFFCLI_SERVER_SOCKET", str(server.path))
    client = connect()
    assert client is not None
    client.close()
    monkeypatch.setenv("DIFFCLI_HOME", str(tmp_path / "elsewhere"))  # other models: not the server's to run
    assert connect() is None
    monkeypatch.setenv("DIFFCLI_HOME", server.env["DIFFCLI_HOME"])
    monkeypatch.setenv("DIFFCLI_SERVER", "off")
    assert connect() is None


def test_a_model_that_fails_to_load_leaves_the_servers_next_float32_job_exact(
    sock_dir, tmp_path_factory, tiny_sd, tmp_path
):
    """A long-lived server loads one model after another: a bfloat16 load that raises (here: --dtype auto
    on a CPU that computes bfloat16, forced) must not leave the process's default dtype in bfloat16."""
    import tiny_models
    from helpers import pixels
    from serving import RunningServer, server_env

    unbuildable = tiny_models.build_unbuildable(tmp_path / "unbuildable", tiny_sd)
    job = ["txt2img", "red house", "--steps", "2", "--seed", "3"]
    local = subprocess.run(
        [
            sys.executable,
            "-m",
            "diffcli",
            *job,
            "-m",
            str(tiny_sd),
            "--dtype",
            "float32",
            "--no-server",
            "-o",
            str(tmp_path / "local"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert local.returncode == 0, local.stderr
    env = {**server_env(tmp_path_factory.mktemp("serverhome")), "DIFFCLI_CPU_BF16": "1"}
    server = RunningServer(sock_dir, env, ["--idle", "5m"])
    try:
        r = server.cli(*job, "-m", unbuildable, "-o", tmp_path / "broken")
        assert r.returncode == 1 and "cannot load model" in r.stderr
        r = server.cli(*job, "-m", tiny_sd, "--dtype", "float32", "-o", tmp_path / "served")
        assert r.returncode == 0, r.stderr
        assert server.status()["jobs_done"] == 1 and server.status()["jobs_failed"] == 1  # both ran on the server
        served = Path(r.stdout.strip())
        assert (pixels(served if served.is_absolute() else tmp_path / served) == pixels(local.stdout.strip())).all()
    finally:
        server.stop()

"""Who can use the HTTP API (docs/serve.md, "Who can use it"): open to local users without credentials,
an API key (Bearer, or the Basic password) or an A1111-style user:password (Basic) otherwise; what
`serve --status` says about it; secrets reaching a detached server without a command line; and secrets
kept out of the client/server compatibility check. Real servers on 127.0.0.1, real clients."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from diffcli.serve.client import connect

from helpers import heavy_imports
from serving import RunningServer, server_env

KEY = "k" * 24
USER, PASSWORD = "alice", "correct-horse-battery"
SECRETS = ("DIFFCLI_API_KEY", "DIFFCLI_API_AUTH")


def status_of(address: str, path: str = "/sdapi/v1/samplers", headers: dict | None = None) -> int:
    request = urllib.request.Request(f"http://{address}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def clean_env(home: Path, sock: Path, **extra) -> dict:
    env = {**server_env(home), "DIFFCLI_SERVER_SOCKET": str(sock), **extra}
    env.pop("DIFFCLI_SERVER", None)
    for name in SECRETS:
        if name not in extra:
            env.pop(name, None)
    return env


@pytest.fixture
def running(tmp_path_factory):
    """Start servers with an environment of one's own: running(env_extra, *args)."""
    started = []

    def start(extra: dict, *args: str) -> RunningServer:
        directory = Path(tempfile.mkdtemp(prefix="dcs", dir="/tmp"))
        env = clean_env(tmp_path_factory.mktemp("serverhome"), directory / "s.sock", **extra)
        server = RunningServer(directory, env, ["--idle", "5m", *args])
        server.http = server.status()["http"]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


def serve_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "diffcli", "serve", *args], capture_output=True, text=True, env=env, timeout=120
    )


# -- item 1: every option reaches the process that serves ---------------------------------------------


@pytest.mark.parametrize(
    "flags, headers, secret, names",
    [
        (["--api-key", KEY], bearer(KEY), KEY, ["api-key"]),
        (["--api-auth", f"{USER}:{PASSWORD}"], basic(USER, PASSWORD), PASSWORD, ["basic"]),
    ],
)
def test_detach_gives_the_server_its_credentials_and_keeps_them_off_command_lines(
    sock_dir, tmp_path, flags, headers, secret, names
):
    env = clean_env(tmp_path / "home", sock_dir / "s.sock")
    started = serve_cli(env, "--detach", "--http", "127.0.0.1:0", *flags, "--idle", "5m")
    assert started.returncode == 0, started.stderr
    pid = None
    try:
        status = json.loads(serve_cli(env, "--status", "--json").stdout)
        pid, address = status["pid"], status["http"]
        assert status_of(address) == 401  # the credentials reached the server: without them, no answer
        assert status_of(address, headers=headers) == 200
        assert status["http_auth"] == names
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"--http" in cmdline and secret.encode() not in cmdline  # not visible to `ps`
    finally:
        serve_cli(env, "--stop")
        if pid and Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def test_detach_next_to_a_running_server_refuses(running):
    first = running({})
    p = serve_cli(first.env, "--detach", "--http", "127.0.0.1:0", "--api-key", KEY)
    # the flags would not reach the server that answers (the one already running): refused, exit 2
    assert p.returncode == 2 and "already running" in p.stderr and "started" not in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1
    assert first.status()["pid"] == first.proc.pid


def test_http_flags_without_http_are_refused(sock_dir, tmp_path):
    env = clean_env(tmp_path / "home", sock_dir / "s.sock")
    try:
        for args, flag in (
            (["--detach", "--api-key", KEY], "--api-key"),
            (["--detach", "--api-auth", f"{USER}:{PASSWORD}"], "--api-auth"),
            (["--detach", "--output-dir", str(tmp_path)], "--output-dir"),
        ):
            p = serve_cli(env, *args)
            assert p.returncode == 2 and p.stderr == (
                f"diffcli: error: {flag} is for the HTTP API; add --http HOST:PORT (e.g. 127.0.0.1:7860)\n"
            ), p.stderr
        assert not (sock_dir / "s.sock").exists()
        # the variables may be set for other uses: a server without --http still starts
        p = serve_cli({**env, "DIFFCLI_API_KEY": KEY}, "--detach")
        assert p.returncode == 0 and "started" in p.stderr, p.stderr
    finally:
        serve_cli(env, "--stop")


# -- item 2: who can use the HTTP API -----------------------------------------------------------------


def test_without_credentials_status_and_log_say_the_api_is_open(running):
    server = running({}, "--http", "127.0.0.1:0")
    assert status_of(server.http) == 200
    said = server.cli("serve", "--status")
    assert said.returncode == 0 and f"HTTP on {server.http}: open to every local user (no key)" in said.stdout
    assert json.loads(server.cli("serve", "--status", "--json").stdout)["http_auth"] == []
    assert "open to every local user (no key)" in server.log()


def test_api_auth_is_a1111_basic_and_webuiapi_set_auth_gets_in(running):
    webuiapi = pytest.importorskip("webuiapi")
    server = running({"DIFFCLI_API_AUTH": f"{USER}:{PASSWORD}"}, "--http", "127.0.0.1:0")  # from the environment
    host, port = server.http.rsplit(":", 1)
    client = webuiapi.WebUIApi(host=host, port=int(port))
    with pytest.raises(RuntimeError, match="401"):
        client.txt2img(prompt="castle", steps=1, seed=1, width=64, height=64)
    client.set_auth(USER, "wrong-password-here")
    with pytest.raises(RuntimeError, match="401"):
        client.txt2img(prompt="castle", steps=1, seed=1, width=64, height=64)
    client.set_auth(USER, PASSWORD)
    result = client.txt2img(prompt="castle", steps=1, seed=1, width=64, height=64)
    assert result.image.size == (64, 64)
    assert status_of(server.http, headers=basic("mallory", PASSWORD)) == 401  # the user name counts too
    assert status_of(server.http, headers=bearer(PASSWORD)) == 401  # a password is not an API key
    # Basic credentials are ambient in a browser: a page of another site still gets nothing
    assert status_of(server.http, headers={**basic(USER, PASSWORD), "Origin": "http://evil.example"}) == 403
    said = server.cli("serve", "--status").stdout
    assert f"HTTP on {server.http}: needs user:password (Basic)" in said, said
    assert PASSWORD not in said and PASSWORD not in server.log()


def test_api_key_is_bearer_for_openai_and_the_basic_password(running):
    openai = pytest.importorskip("openai")
    server = running({}, "--http", "127.0.0.1:0", "--api-key", KEY)
    base = f"http://{server.http}/v1"
    with pytest.raises(openai.AuthenticationError) as refused:
        openai.OpenAI(base_url=base, api_key="not-the-key-at-all", max_retries=0).images.generate(
            prompt="castle", model="tiny-lcm", size="64x64", response_format="b64_json"
        )
    # in OpenAI's error shape, which its library reads: the message, not a bare "Error code: 401"
    assert refused.value.code == "invalid_api_key" and "missing or wrong credentials" in refused.value.message
    made = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=120).images.generate(
        prompt="castle", model="tiny-lcm", size="64x64", response_format="b64_json"
    )
    assert len(made.data) == 1 and made.data[0].b64_json
    assert status_of(server.http, headers=basic("anyone", KEY)) == 200  # A1111 clients: the key as the password
    assert status_of(server.http, headers=basic("anyone", "k" * 23)) == 401
    said = json.loads(server.cli("serve", "--status", "--json").stdout)
    assert said["http_auth"] == ["api-key"] and KEY not in json.dumps(said)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--api-auth", "alice"], "--api-auth must be USER:PASSWORD"),
        (["--api-auth", ":" + PASSWORD], "--api-auth must be USER:PASSWORD"),
        (["--api-auth", "alice:short"], "the --api-auth password must be at least 16 characters"),
        (["--api-key", "short"], "--api-key must be at least 16 characters"),
    ],
)
def test_bad_credentials_are_one_line_exit_2(sock_dir, tmp_path, args, message):
    p = serve_cli(clean_env(tmp_path / "home", sock_dir / "s.sock"), "--http", "127.0.0.1:0", *args)
    assert p.returncode == 2 and p.stderr == f"diffcli: error: {message}\n", p.stderr
    assert not (sock_dir / "s.sock").exists()


def test_status_and_help_do_not_import_torch(running, monkeypatch):
    server = running({}, "--http", "127.0.0.1:0", "--api-key", KEY)
    server.use_env(monkeypatch)
    for args in (["serve", "--status"], ["serve", "--help"]):
        p = heavy_imports(*args)
        assert p.returncode == 0 and p.stderr.splitlines()[-1] == "HEAVY=", (args, p.stderr)
    assert "needs an API key" in heavy_imports("serve", "--status").stdout


# -- item 5: secrets are not compatibility ------------------------------------------------------------


def test_a_shell_without_the_key_still_uses_the_server(running, monkeypatch):
    server = running({"DIFFCLI_API_KEY": KEY, "DIFFCLI_API_AUTH": f"{USER}:{PASSWORD}"}, "--http", "127.0.0.1:0")
    assert status_of(server.http) == 401  # the server took its key from its environment
    server.use_env(monkeypatch)
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    client = connect()
    assert client is not None  # this shell has no key, and still uses the running server
    client.close()
    env = {k: v for k, v in server.env.items() if k not in SECRETS}
    said = subprocess.run(
        [sys.executable, "-m", "diffcli", "serve", "--status", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert json.loads(said.stdout)["compatible"] is True
    monkeypatch.setenv("DIFFCLI_API_KEY", "another-key-entirely-0123")  # nor does a different one matter
    client = connect()
    assert client is not None
    client.close()

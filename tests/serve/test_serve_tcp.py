"""The TCP transport (what platforms without Unix sockets use; DIFFCLI_SERVER_TRANSPORT=tcp forces it
here): 127.0.0.1 and a token file only the user can read; a connection without the token gets nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import shutil
import socket
import stat
import tempfile
import threading
from pathlib import Path

import pytest

from diffcli.serve.client import open_channel
from diffcli.serve.protocol import PROTOCOL, TRANSPORT_ENV, compat_key, write_token

from helpers import pixels
from serving import RunningServer, server_env


@pytest.fixture
def tcp_server(tmp_path_factory, monkeypatch):
    monkeypatch.setenv(TRANSPORT_ENV, "tcp")  # for this process's own status requests too
    directory = Path(tempfile.mkdtemp(prefix="dcs", dir="/tmp"))
    server = RunningServer(
        directory, {**server_env(tmp_path_factory.mktemp("serverhome")), TRANSPORT_ENV: "tcp"}, ["--idle", "5m"]
    )
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def test_commands_use_a_tcp_server_and_strangers_get_nothing(tcp_server, tiny_sd, tmp_path):
    token_file = tcp_server.path.with_name("s.token")
    assert not tcp_server.path.exists() and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    info = json.loads(token_file.read_text())
    args = ["txt2img", "castle", "-m", tiny_sd, "--seed", "4", "--steps", "2", "--dtype", "float32", "--quiet"]
    served = tcp_server.cli(*args, "-o", tmp_path / "a/")
    assert served.returncode == 0, served.stderr + tcp_server.log()
    assert tcp_server.status()["jobs_done"] == 1  # it went through the server (the same job as without one:
    assert pixels(served.stdout.strip()).ndim == 3  # test_serve_client checks the pixels)

    for first in ({"op": "auth", "token": "0" * 64}, {"op": "status"}):  # a wrong token, or none
        with socket.create_connection(("127.0.0.1", info["port"]), timeout=10) as sock:
            sock.sendall((json.dumps(first) + "\n").encode())
            assert sock.recv(4096) == b""  # closed without a word
    assert tcp_server.log().count("refused a connection without the token") == 2

    tcp_server.stop()
    assert not token_file.exists()  # clients run by themselves again


def _proof(token: str, side: str, client_nonce: str, server_nonce: str) -> str:
    """The wire format of docs/serve.md: HMAC-SHA256 keyed with the token over who proves and both nonces."""
    message = f"diffcli-{side}\n{client_nonce}\n{server_nonce}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def test_the_server_proves_it_knows_the_token_before_the_client_proves_it(tcp_server):
    info = json.loads(tcp_server.path.with_name("s.token").read_text())
    token, nonce = info["token"], secrets.token_hex(32)

    def greet(sock) -> dict:
        sock.sendall((json.dumps({"op": "auth", "nonce": nonce}) + "\n").encode())
        challenge = json.loads(sock.makefile().readline())
        assert challenge["type"] == "challenge" and challenge["nonce"] != nonce
        assert hmac.compare_digest(challenge["proof"], _proof(token, "server", nonce, challenge["nonce"]))
        return challenge

    with socket.create_connection(("127.0.0.1", info["port"]), timeout=10) as sock:  # a wrong proof: no hello
        challenge = greet(sock)
        wrong = _proof("f" * 64, "client", nonce, challenge["nonce"])
        sock.sendall((json.dumps({"op": "auth", "proof": wrong}) + "\n").encode())
        assert sock.recv(4096) == b""
    with socket.create_connection(("127.0.0.1", info["port"]), timeout=10) as sock:  # the secret itself: nothing
        sock.sendall((json.dumps({"op": "auth", "token": token}) + "\n").encode())
        assert sock.recv(4096) == b""
    with socket.create_connection(("127.0.0.1", info["port"]), timeout=10) as sock:  # the right proof: hello
        challenge = greet(sock)
        right = _proof(token, "client", nonce, challenge["nonce"])
        sock.sendall((json.dumps({"op": "auth", "proof": right}) + "\n").encode())
        assert json.loads(sock.makefile().readline())["type"] == "hello"


@pytest.mark.parametrize("answer", ["hello", "challenge"])
def test_a_client_never_sends_the_token_to_whoever_holds_the_port(sock_dir, monkeypatch, capsys, answer):
    """A process that took the port of a crashed server learns nothing of the token and is not used."""
    monkeypatch.setenv(TRANSPORT_ENV, "tcp")
    path = sock_dir / "s.sock"
    monkeypatch.setenv("DIFFCLI_SERVER_SOCKET", str(path))
    impostor = socket.create_server(("127.0.0.1", 0))
    token = secrets.token_hex(32)
    write_token(path, impostor.getsockname()[1], token)  # what the crashed server left
    received = bytearray()

    def pretend() -> None:
        conn, _ = impostor.accept()
        with conn:
            conn.settimeout(5)
            try:
                received.extend(conn.recv(65536))
                reply = (
                    {"type": "hello", "server": "diffcli", "protocol": PROTOCOL, "compat": compat_key(), "pid": 1}
                    if answer == "hello"
                    else {"type": "challenge", "nonce": secrets.token_hex(32), "proof": secrets.token_hex(32)}
                )
                conn.sendall((json.dumps(reply) + "\n").encode())
                while chunk := conn.recv(65536):
                    received.extend(chunk)
            except OSError:
                pass

    thread = threading.Thread(target=pretend, daemon=True)
    thread.start()
    try:
        assert open_channel(path) is None  # it runs by itself
        thread.join(timeout=10)
    finally:
        impostor.close()
    assert received and token.encode() not in bytes(received)
    assert json.loads(bytes(received).splitlines()[0]).keys() == {"op", "nonce"}  # only its own nonce
    if answer == "challenge":
        assert "did not prove it knows the token" in capsys.readouterr().err

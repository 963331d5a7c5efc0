"""The CLI's side of the socket: use this user's server when one is running, else say so (None).

Nothing here imports torch. A command still settles its job itself (the same checks, warnings and
seed as without a server, so bad input fails here in milliseconds), then sends the settled job;
the server checks it all again, plans the output names, generates and writes the files, and sends
back progress calls, result lines and the outcome, which this side shows exactly as the command
would have. Paths are sent absolute and shown back in the form the user wrote them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from diffcli.errors import DiffcliError, RuntimeFailure, UsageError
from diffcli.serve.protocol import (
    MODE_ENV,
    PROTOCOL,
    Channel,
    ProtocolError,
    auth_field,
    compat_key,
    endpoint,
    error_from,
    new_nonce,
    peer_uid,
    proof,
    proof_matches,
    read_token,
    sibling,
    socket_path,
    try_lock,
    unsafe_socket,
    uses_tcp,
)

CONNECT_TIMEOUT_S = 5.0
CANCEL_WAIT_S = 30.0  # after Ctrl-C: how long the server may take to stop the job (and save partials)
START_WAIT_S = 60.0
GONE_WAIT_S = 2.0  # a server whose connection dropped mid-job: how long to wait for it to be gone


def _mode() -> str:
    return os.environ.get(MODE_ENV, "").strip().lower()


def _warn(reporter, message: str) -> None:
    if reporter is not None:
        reporter.warn(message)
    else:
        sys.stderr.write(f"diffcli: warning: {message}\n")


def open_channel(path: Path | None = None, reporter=None) -> tuple[Channel, dict] | None:
    """A connection to the server at PATH (default: this user's) and its hello; None when no usable
    server answers there. A socket or server of another user is refused with a warning."""
    path = path or socket_path()
    if uses_tcp():
        return _open_tcp(path, reporter)
    if not os.path.lexists(path):
        return None
    reason = unsafe_socket(path)
    if reason:
        _warn(reporter, f"not using the diffcli server: {reason}")
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT_S)
    try:
        sock.connect(str(path))
        uid = peer_uid(sock)
        if uid is not None and uid != os.getuid():
            _warn(reporter, f"not using the diffcli server at {path}: it runs as uid {uid}")
            sock.close()
            return None
        channel = Channel(sock)
        hello = channel.receive(timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ProtocolError):  # a stale socket (server killed), or not a server of ours
        sock.close()
        return None
    return _greeted(channel, hello)


def _open_tcp(path: Path, reporter) -> tuple[Channel, dict] | None:
    """open_channel over 127.0.0.1: the port and token from the server's token file."""
    info, reason = read_token(path)
    if info is None:
        if reason:
            _warn(reporter, f"not using the diffcli server: {reason}")
        return None
    try:
        sock = socket.create_connection(("127.0.0.1", info["port"]), timeout=CONNECT_TIMEOUT_S)
    except OSError:  # a token file left by a killed server
        return None
    channel = Channel(sock)
    token, client_nonce = info["token"], new_nonce()
    try:  # the server proves it knows the token first; the token itself never travels (protocol.py)
        channel.send({"op": "auth", "nonce": client_nonce})
        challenge = channel.receive(timeout=CONNECT_TIMEOUT_S)
        server_nonce = auth_field(challenge, "nonce", challenge=True)
        if (
            server_nonce is None
            or server_nonce == client_nonce
            or not proof_matches(
                auth_field(challenge, "proof", challenge=True), token, "server", client_nonce, server_nonce
            )
        ):
            if challenge is not None and challenge.get("type") == "challenge":  # speaks our protocol, without the token
                _warn(
                    reporter,
                    f"not using the diffcli server: the process on 127.0.0.1:{info['port']} did not "
                    f"prove it knows the token",
                )
            channel.close()
            return None
        channel.send({"op": "auth", "proof": proof(token, "client", client_nonce, server_nonce)})
        hello = channel.receive(timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ProtocolError):
        channel.close()
        return None
    return _greeted(channel, hello)


def _greeted(channel: Channel, hello: dict | None) -> tuple[Channel, dict] | None:
    if not hello or hello.get("type") != "hello" or hello.get("protocol") != PROTOCOL:
        channel.close()
        return None
    channel.sock.settimeout(None)
    return channel, hello


def connect(reporter=None, start: bool = True) -> "Client | None":
    """A client of this user's running server, if there is one that runs jobs as this process would
    (same diffcli, same environment); else None. DIFFCLI_SERVER=off never connects; =auto starts a
    server when none runs (unless START is False: `diffcli mcp` starts none)."""
    mode = _mode()
    if mode in ("off", "0", "no", "false", "never"):
        return None
    path = socket_path()
    opened = open_channel(path, reporter)
    if opened is None and start and mode == "auto" and not os.path.lexists(endpoint(path)):
        try:
            start_detached(["--idle", os.environ.get("DIFFCLI_SERVER_IDLE", "10m")], path)
        except DiffcliError as exc:
            _warn(reporter, f"could not start a diffcli server ({exc}); running without one")
            return None
        opened = open_channel(path, reporter)
    if opened is None:
        return None
    channel, hello = opened
    if hello.get("compat") != compat_key():  # another diffcli, or another environment: run here
        channel.close()
        return None
    return Client(channel, hello)


class Shown:
    """Paths as the server writes them (absolute) and as the user wrote them (maybe relative)."""

    def __init__(self, out: str | None) -> None:
        from diffcli.output import DEFAULT_DIR, split_out

        out = out or None
        self.display_dir = split_out(out)[0]
        expanded = os.path.expanduser(out) if out else DEFAULT_DIR + os.sep
        self.absolute_out = os.path.join(os.getcwd(), expanded)
        self.absolute_dir = split_out(self.absolute_out)[0]

    def path(self, text: str) -> str:
        p = Path(str(text))
        return str(self.display_dir / p.name) if p.parent == self.absolute_dir else str(text)

    def line(self, text: str, as_json: bool) -> str:
        if not as_json:
            return self.path(text)
        try:
            record = json.loads(text)
        except ValueError:
            return text
        if isinstance(record, dict) and isinstance(record.get("path"), str):
            record["path"] = self.path(record["path"])
        return json.dumps(record)

    def error(self, exc: Exception) -> Exception:
        """EXC with the output directory named as the user wrote it."""
        text, absolute = str(exc), str(self.absolute_dir)
        if absolute == str(self.display_dir) or absolute not in text:
            return exc
        prefix = str(self.display_dir / "x")[:-1]  # "outputs/", or "" for the current directory
        text = text.replace(absolute + os.sep, prefix).replace(absolute, str(self.display_dir))
        try:
            shown = type(exc)(text)
        except TypeError:
            return exc
        shown.exit_code = getattr(exc, "exit_code", 1)
        return shown


class Client:
    """One connection to a server, for one job."""

    def __init__(self, channel: Channel, hello: dict) -> None:
        self.channel = channel
        self.hello = hello

    def close(self) -> None:
        self.channel.close()

    def run(self, job, opts, reporter) -> list[Path]:
        """Run JOB on the server as diffcli.run.run would here: same checks, stdout, stderr, exit codes."""
        try:
            return self._run(job, opts, reporter)
        finally:
            self.close()

    def _run(self, job, opts, reporter) -> list[Path]:
        from diffcli.flags import wire_options
        from diffcli.run import settle

        prepared = settle(job, opts, reporter)  # bad input fails here, as without a server
        shown = Shown(opts.out)
        wire = wire_options(opts)
        wire["out"] = shown.absolute_out
        request = {"op": "run", "job": prepared.job.to_dict(), "opts": wire, "settled": True}
        return self._exchange(request, shown, opts.json, reporter, lambda: _run_here(prepared, opts, reporter))

    def _exchange(self, request: dict, shown: Shown, as_json: bool, reporter, run_here) -> list[Path]:
        """Send REQUEST, show what comes back as the command would, return the written paths (RUN_HERE
        when the server turns out to be stopping)."""
        umask = os.umask(0o022)
        os.umask(umask)
        self.channel.send({**request, "umask": umask})
        interrupted: KeyboardInterrupt | None = None
        deadline = None
        while True:
            try:
                message = self._receive(deadline)
                if message is None:
                    self._server_gone(shown)
                    if interrupted is not None:
                        raise interrupted
                    raise RuntimeFailure(
                        "the diffcli server stopped before the job finished (see its log); "
                        "run the command again, or pass --no-server"
                    )
                kind = message.get("type")
                if kind == "call":
                    from diffcli.serve.reporter import replay

                    replay(reporter, str(message.get("name")), message.get("args"), shown.path)
                elif kind == "result":
                    sys.stdout.write(shown.line(str(message.get("line", "")), as_json) + "\n")
                    sys.stdout.flush()
                elif kind == "queued":
                    reporter.emit("queued", position=message.get("position"))
                elif kind == "end":
                    return [Path(shown.path(p)) for p in message.get("paths", [])]
                elif kind == "error":
                    if message.get("kind") == "interrupted" and interrupted is not None:
                        raise interrupted
                    if message.get("kind") == "unavailable":  # stopping: run here after all
                        return run_here()
                    raise shown.error(error_from(message))
            except KeyboardInterrupt as exc:
                if interrupted is not None or isinstance(exc, _Gone):
                    raise (interrupted or exc) from None
                interrupted = exc  # Ctrl-C / SIGTERM: stop this job on the server, show what it saved
                self.channel.try_send({"op": "cancel"})
                deadline = time.monotonic() + CANCEL_WAIT_S

    def _receive(self, deadline: float | None) -> dict | None:
        try:
            if deadline is None:
                return self.channel.receive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError()
            return self.channel.receive(timeout=remaining)
        except TimeoutError:
            raise _Gone() from None
        except (OSError, ProtocolError):
            return None

    def _server_gone(self, shown: Shown) -> None:
        """The server died mid-job (kill -9): remove the output-name reservations it left, so the output
        folder is as a local run killed at the same moment would leave it."""
        pid = self.hello.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            return
        deadline = time.monotonic() + GONE_WAIT_S  # its socket closes while the kernel is still ending it
        from diffcli.output import pid_alive

        while pid_alive(pid):
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        try:
            for marker in Path(shown.absolute_dir).glob(f".diffcli-{pid}-*.reserved"):
                marker.unlink(missing_ok=True)
        except OSError:
            pass


class _Gone(KeyboardInterrupt):
    """The server did not answer a cancel in time."""


def _run_here(prepared, opts, reporter) -> list[Path]:
    from diffcli.run import execute, plan_outputs

    return execute(plan_outputs(prepared, opts), opts, reporter)


# -- managing a server: status, stop, start in the background ---------------------------------------


def request(op: str, path: Path | None = None) -> dict | None:
    """Send OP ("status" or "stop") to the server at PATH; its answer, or None when none runs there."""
    opened = open_channel(path)
    if opened is None:
        return None
    channel, hello = opened
    try:
        channel.send({"op": op})
        answer = channel.receive(timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ProtocolError):
        return None
    finally:
        channel.close()
    if answer is not None:
        answer.setdefault("pid", hello.get("pid"))
        answer["compatible"] = hello.get("compat") == compat_key()
    return answer


def start_detached(
    args: list[str], path: Path | None = None, secrets: dict[str, str | None] | None = None, adopt: bool = True
) -> dict:
    """Start `diffcli serve ARGS` in the background (its own session, output to server.log beside the
    socket) and wait until it answers; returns its status. SECRETS (environment variable → value, None:
    unset) reach it through its environment, which only this user can read, never its command line.
    ADOPT: a server that another process started meanwhile will do (DIFFCLI_SERVER=auto); otherwise it
    is an error, since it runs without ARGS."""
    path = path or socket_path()
    from diffcli.serve.protocol import make_private_directory

    make_private_directory(path.parent)
    log_path = sibling(path, ".log")
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    env = {**os.environ, "DIFFCLI_SERVER_SOCKET": str(path)}
    env.pop(MODE_ENV, None)
    for name, value in (secrets or {}).items():
        env.pop(name, None)
        if value is not None:
            env[name] = value
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "diffcli", "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            env=env,
            cwd="/",
            start_new_session=True,
        )
    finally:
        os.close(fd)
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        code = proc.poll()
        status = request("status", path)
        if status is not None and (status.get("pid") == proc.pid or (code is not None and adopt)):
            return status  # (or one started meanwhile)
        if code is not None:
            tail = _tail(log_path)
            if code == 2 and tail:  # its usage error (e.g. another server took the socket meanwhile)
                raise UsageError(tail)
            raise RuntimeFailure(f"the server exited at once (exit {code}){': ' + tail if tail else ''}")
        time.sleep(0.1)
    raise RuntimeFailure(f"the server did not answer within {START_WAIT_S:.0f} s (see {log_path})")


def _tail(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].removeprefix("diffcli: error: ") if lines else ""


def wait_gone(path: Path | None = None, timeout: float = 30.0) -> bool:
    """Wait until the server of PATH has exited (its lock is free); False if TIMEOUT passed first."""
    lock = sibling(path or socket_path(), ".lock")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return True
        except OSError:
            return False
        try:
            if try_lock(fd):
                return True
        finally:
            os.close(fd)
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)

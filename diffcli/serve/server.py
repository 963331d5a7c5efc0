"""The resident server: a private Unix socket (or 127.0.0.1 and a token file, see protocol.py) in front
of the worker (and optionally the HTTP API).

One thread accepts connections, one thread per connection talks to its client, one worker thread runs
the jobs. The server stops after --idle without work, on `diffcli serve --stop` (after the jobs it
holds), or on SIGINT/SIGTERM (cancelling them).
"""

from __future__ import annotations

import os
import secrets
import select
import socket
import sys
import threading
import time
from pathlib import Path

from diffcli.errors import UsageError
from diffcli.serve.protocol import (
    PROTOCOL,
    Channel,
    ProtocolError,
    auth_field,
    compat_key,
    endpoint,
    error_message,
    make_private_directory,
    new_nonce,
    peer_uid,
    proof,
    proof_matches,
    sibling,
    try_lock,
    unsafe_socket,
    uses_tcp,
    write_token,
)
from diffcli.serve.worker import Stopping, Task, Worker, parse_request, parse_upscale

REQUEST_WAIT_S = 3600.0  # a client settles its job (maybe downloading a model) before it sends it
AUTH_WAIT_S = 5.0  # TCP: how long a connection has to present the token
CLIENT_POLL_S = 0.05  # while its job runs: how often a connection checks for a cancel or a hang-up


def log_line(text: str) -> None:
    try:
        sys.stderr.write(f"diffcli serve: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class Server:
    def __init__(
        self,
        path: Path,
        keep: int = 2,
        idle_s: float | None = 600.0,
        log=log_line,
        max_bytes: int | None = None,
        compile: bool = False,
    ) -> None:
        self.path = path
        self.idle_s = idle_s
        self.log = log
        self.worker = Worker(keep=keep, log=log, max_bytes=max_bytes, compile=compile)
        self.started = time.time()
        self.stopping = threading.Event()
        self.connections = 0
        self.lock = threading.Lock()
        self.last_active = time.monotonic()
        self.listener: socket.socket | None = None
        self.lock_fd: int | None = None
        self.inode: tuple | None = None
        self.handlers: list[threading.Thread] = []
        self.http = None  # diffcli.serve.http.HttpFrontDoor, when --http
        self.token: str | None = None  # TCP: what every connection must present first

    # -- socket life -------------------------------------------------------------------------------

    def open(self) -> None:
        """Claim the socket path (one server per path) and listen, mode 0600."""
        if uses_tcp():
            self._open_tcp()
            return
        if len(os.fsencode(str(self.path))) > 100:
            raise UsageError(
                f"the socket path {self.path} is too long for a Unix socket (at most 100 bytes); "
                f"set DIFFCLI_SERVER_SOCKET to a shorter one"
            )
        make_private_directory(self.path.parent)
        self._lock()
        if os.path.lexists(self.path):
            reason = unsafe_socket(self.path)
            if reason:
                self._unlock()
                raise UsageError(f"cannot use {self.path}: {reason}")
            os.unlink(self.path)  # we hold the lock: whoever made it is gone
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket appears 0600, never wider even for an instant
        try:
            listener.bind(str(self.path))
        except OSError as exc:
            listener.close()
            self._unlock()
            raise UsageError(f"cannot listen on {self.path}: {exc.strerror or exc}") from None
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        st = os.lstat(self.path)
        self.inode = (st.st_dev, st.st_ino)
        listener.listen(16)
        self.listener = listener
        self.worker.start()
        self.log(f"listening on {self.path} (pid {os.getpid()})")

    def _open_tcp(self) -> None:
        """Listen on 127.0.0.1 (a port the system picks) and leave the port and a fresh token in the
        token file, which only this user can read."""
        make_private_directory(self.path.parent)
        self._lock()
        try:
            listener = socket.create_server(("127.0.0.1", 0), backlog=16)
        except OSError as exc:
            self._unlock()
            raise UsageError(f"cannot listen on 127.0.0.1: {exc.strerror or exc}") from None
        self.token = secrets.token_hex(32)
        port = listener.getsockname()[1]
        write_token(self.path, port, self.token)
        st = os.lstat(endpoint(self.path))
        self.inode = (st.st_dev, st.st_ino)
        self.listener = listener
        self.worker.start()
        self.log(f"listening on 127.0.0.1:{port}, token in {endpoint(self.path)} (pid {os.getpid()})")

    def _lock(self) -> None:
        path = sibling(self.path, ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        if not try_lock(fd):
            os.close(fd)
            raise UsageError(
                f"a diffcli server is already running on {self.path} (`diffcli serve --status`, `diffcli serve --stop`)"
            ) from None
        self.lock_fd = fd

    def _unlock(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # closing releases the lock; the file stays (removing it would race)
            self.lock_fd = None

    def _stop_listening(self) -> None:
        if self.listener is None:
            return
        try:
            st = os.lstat(endpoint(self.path))
            if (st.st_dev, st.st_ino) == self.inode:
                os.unlink(endpoint(self.path))  # new clients run by themselves from now on
        except OSError:
            pass
        self.listener.close()
        self.listener = None

    # -- main loop ---------------------------------------------------------------------------------

    def serve(self) -> None:
        """Accept clients until stopped or idle; then finish (or, on Ctrl-C/SIGTERM, cancel) the jobs held."""
        try:
            while not self.stopping.is_set():
                if self._idle_expired():
                    self.log(f"idle for {format_duration(self.idle_s)}; stopping")
                    break
                ready, _, _ = select.select([self.listener], [], [], 0.5)
                if ready:
                    self._accept()
            self.close(cancel=False)
        except KeyboardInterrupt:
            self.log("stopping (signal): cancelling the jobs held")
            self.close(cancel=True)
            raise

    def close(self, cancel: bool) -> None:
        self._stop_listening()
        if self.http is not None:
            self.http.stop()
        self.worker.stop(cancel=cancel)
        if not self.worker.wait_idle(timeout=None if not cancel else 30):
            self.log("a job did not stop in time; leaving it")
        for thread in list(self.handlers):  # let each client get its job's outcome
            thread.join(timeout=5)
        self._unlock()
        self.log("stopped")

    def _idle_expired(self) -> bool:
        if not self.idle_s:
            return False
        with self.lock:
            if self.connections:
                return False
            quiet_since = self.last_active
        if self.worker.busy() or (self.http is not None and self.http.busy()):
            return False
        quiet_since = max(quiet_since, self.worker.last_active, self.http.last_active if self.http else 0.0)
        return time.monotonic() - quiet_since > self.idle_s

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with self.lock:
            self.connections += 1
            self.last_active = time.monotonic()
        thread = threading.Thread(target=self._handle, args=(conn,), name="diffcli-client", daemon=True)
        self.handlers = [t for t in self.handlers if t.is_alive()] + [thread]
        thread.start()

    # -- one connection ----------------------------------------------------------------------------

    def _handle(self, conn: socket.socket) -> None:
        channel = Channel(conn)
        try:
            if self.token is not None:
                if not self._authenticate(channel):  # nothing more for a stranger
                    self.log("refused a connection without the token")
                    return
            else:
                uid = peer_uid(conn)
                if uid is not None and uid != os.getuid():
                    self.log(f"refused a connection from uid {uid}")
                    return
            channel.send(self.hello())
            message = channel.receive(timeout=REQUEST_WAIT_S)
            if message is None:
                return
            op = message.get("op")
            if op == "run":
                self._run(channel, message)
            elif op == "status":
                channel.send(self.status())
            elif op == "stop":
                channel.send({"type": "stopping", "pid": os.getpid(), **self.worker.counts()})
                self.log("stop requested")
                self.stopping.set()
            else:
                channel.send(error_message(UsageError(f"unknown request {op!r}")))
        except (ProtocolError, TimeoutError) as exc:
            channel.try_send(error_message(UsageError(f"bad request: {exc}")))
        except OSError:
            pass
        finally:
            channel.close()
            with self.lock:
                self.connections -= 1
                self.last_active = time.monotonic()

    def _authenticate(self, channel: Channel) -> bool:
        """TCP: prove to the client that we know the token (first), then check its proof (protocol.py)."""
        try:
            client_nonce = auth_field(channel.receive(timeout=AUTH_WAIT_S), "nonce")
            if client_nonce is None:  # not our client: no answer at all
                return False
            server_nonce = new_nonce()
            channel.send(
                {
                    "type": "challenge",
                    "nonce": server_nonce,
                    "proof": proof(self.token, "server", client_nonce, server_nonce),
                }
            )
            given = auth_field(channel.receive(timeout=AUTH_WAIT_S), "proof")
        except (ProtocolError, TimeoutError, OSError):
            return False
        return proof_matches(given, self.token, "client", client_nonce, server_nonce)

    def _run(self, channel: Channel, message: dict) -> None:
        try:
            if "upscale" in message:  # an upscale in the command's own terms: the same Job and options
                job, opts = parse_upscale(message)
            else:
                job, opts = parse_request(message)
        except UsageError as exc:
            channel.send(error_message(exc))
            return
        task = Task(
            job=job,
            opts=opts,
            reporter=None,
            results=lambda line: channel.try_send({"type": "result", "line": line}),
            settled=message.get("settled") is True,
        )
        umask = message.get("umask")
        if isinstance(umask, int) and not isinstance(umask, bool) and 0 <= umask <= 0o777:
            task.umask = umask
        from diffcli.serve.reporter import Forwarder

        task.reporter = Forwarder(channel.try_send, task.cancelled)
        try:
            ahead = self.worker.submit(task)
        except Stopping:
            channel.send({"type": "error", "kind": "unavailable", "exit_code": 1, "message": "the server is stopping"})
            return
        if ahead:
            channel.try_send({"type": "queued", "position": ahead})
        # the outcome goes out the moment the job ends; the client is listened to in between
        while not task.done.wait(CLIENT_POLL_S):
            try:
                incoming = channel.receive(timeout=0)
            except TimeoutError:
                continue
            except (ProtocolError, OSError):
                incoming = None
            if incoming is None:  # the client is gone (Ctrl-C'd hard, killed): its job goes too
                self.worker.cancel(task)
                break
            if incoming.get("op") == "cancel":
                self.worker.cancel(task)
        task.done.wait()
        channel.try_send(task.outcome)

    # -- answers -----------------------------------------------------------------------------------

    def hello(self) -> dict:
        import diffcli

        return {
            "type": "hello",
            "server": "diffcli",
            "protocol": PROTOCOL,
            "version": diffcli.__version__,
            "pid": os.getpid(),
            "compat": compat_key(),
        }

    def status(self) -> dict:
        import diffcli

        return {
            "type": "status",
            "pid": os.getpid(),
            "socket": str(self.path),
            "version": diffcli.__version__,
            "started": round(self.started, 3),
            "uptime_s": round(time.time() - self.started, 1),
            "idle_stop_s": self.idle_s,
            "keep": self.worker.recent.keep,
            "max_memory": self.worker.recent.max_bytes,
            "models": self.worker.recent.loaded(),
            "http": self.http.address if self.http is not None else None,
            "http_auth": self.http.auth if self.http is not None else None,
            "http_access": self.http.access if self.http is not None else None,
            "compat": compat_key(),
            **self.worker.counts(),
        }


def format_duration(seconds: float | None) -> str:
    if not seconds:
        return "never"
    seconds = int(seconds)
    parts = [(seconds // 3600, "h"), (seconds % 3600 // 60, "m"), (seconds % 60, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"

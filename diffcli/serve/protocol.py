"""The local transport: where the socket lives, who may use it, and the message framing.

Messages are JSON objects, one per line (UTF-8, newline-terminated, at most MAX_LINE bytes).

    server → client on connect   {"type": "hello", "protocol": 1, "pid": …, "compat": …}
    client → server              {"op": "run", "job": {…}, "opts": {…}, "settled": true}
                                 {"op": "cancel"} (during a run) | {"op": "status"} | {"op": "stop"}
    server → client during a run {"type": "queued", "position": n}
                                 {"type": "call", "name": "step", "args": {…}}   (a reporter call)
                                 {"type": "result", "line": "…"}                  (a stdout line)
                                 {"type": "end", "paths": […]} | {"type": "error", "kind": …, "message": …,
                                  "exit_code": …}

Only the user who runs the server can connect: the socket is created 0600 in a directory the user
owns, a socket or directory owned by someone else is refused, and on Linux the server checks each
peer's uid (SO_PEERCRED) and the client checks the server's.

Where there are no Unix sockets (Windows), or with DIFFCLI_SERVER_TRANSPORT=tcp, the server listens on
127.0.0.1 at a port of the system's choosing and writes the port and a random token to a file beside
where the socket would be (server.token: created 0600, in the same private directory; on Windows the
user's own runtime directory). Each side then proves that it knows the token without sending it, the
server first (whoever holds the port after a crash learns nothing):

    client → server   {"op": "auth", "nonce": C}                  (C, S: 64 random hex digits)
    server → client   {"type": "challenge", "nonce": S, "proof": HMAC(token, "diffcli-server" LF C LF S)}
    client → server   {"op": "auth", "proof": HMAC(token, "diffcli-client" LF C LF S)}   (if S's proof was right)
    server → client   the hello

HMAC is HMAC-SHA256 keyed with the token's UTF-8 bytes, in hex; LF is a newline. A connection that does
not start that way, or whose proof is wrong, is closed without another word.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import select
import socket
import stat
import struct
import sys
import threading
from pathlib import Path

PROTOCOL = 1
MAX_LINE = 4 * 2**20  # bytes of one message (a job is a few hundred)
SOCKET_ENV = "DIFFCLI_SERVER_SOCKET"
MODE_ENV = "DIFFCLI_SERVER"  # "off": never use a server; "auto": start one on first use
TRANSPORT_ENV = "DIFFCLI_SERVER_TRANSPORT"  # "tcp": 127.0.0.1 and a token file (the default without Unix sockets)
MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to about 104-108 bytes
# Environment that changes what a job does (models found, device, threads): a client uses a server
# only when both agree on it, so the result is what the client would have made itself.
_COMPAT_PREFIXES = (
    "DIFFCLI_",
    "HF_",
    "HUGGINGFACE_",
    "TRANSFORMERS_",
    "DIFFUSERS_",
    "CUDA_",
    "PYTORCH_",
    "TORCH_",
    "OMP_",
    "MKL_",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
)
# Secrets are not compatibility: the HTTP API's credentials (the server's business only) and hub tokens
# (a client settles its job, downloads included, before it sends it).
_COMPAT_SECRETS = {"DIFFCLI_API_KEY", "DIFFCLI_API_AUTH", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}
_COMPAT_IGNORED = {
    SOCKET_ENV,
    MODE_ENV,
    TRANSPORT_ENV,
    "DIFFCLI_DEBUG",
    *_COMPAT_SECRETS,
    "DIFFCLI_HTTP_DEADLINE",
}  # (the HTTP API's request deadline: the server's business too)


def socket_path() -> Path:
    """The server socket of this user: $DIFFCLI_SERVER_SOCKET, else diffcli/server.sock in the user's
    runtime directory (platformdirs)."""
    override = os.environ.get(SOCKET_ENV)
    if override:
        return Path(override).expanduser().absolute()
    import warnings

    from platformdirs import user_runtime_dir

    with warnings.catch_warnings():  # "XDG_RUNTIME_DIR is not set": the fallback is checked below
        warnings.simplefilter("ignore")
        return Path(user_runtime_dir("diffcli", appauthor=False)) / "server.sock"


def sibling(path: Path, suffix: str) -> Path:
    """A file beside the socket: server.sock → server.lock, server.log."""
    return path.with_name(path.stem + suffix)


def uses_tcp() -> bool:
    """Whether servers and clients here meet on 127.0.0.1 with a token file instead of a Unix socket."""
    return not hasattr(socket, "AF_UNIX") or os.environ.get(TRANSPORT_ENV, "").strip().lower() == "tcp"


def endpoint(path: Path) -> Path:
    """The file a running server leaves for its clients: the socket, or the token file (TCP)."""
    return sibling(path, ".token") if uses_tcp() else path


def write_token(path: Path, port: int, token: str) -> None:
    """The token file of the server at PATH, written whole (temp file then rename), readable only by its owner."""
    target = sibling(path, ".token")
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temp, flags, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({"port": port, "token": token, "pid": os.getpid()}, fh)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def read_token(path: Path) -> tuple[dict | None, str | None]:
    """(the port and token of the server at PATH, None) or (None, why it is not usable; None if absent)."""
    target = sibling(path, ".token")
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"{target}: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return None, f"{target} is not a regular file"
    if hasattr(os, "getuid"):
        if st.st_uid != os.getuid():
            return None, f"{target} belongs to another user (uid {st.st_uid}); not using it"
        if st.st_mode & 0o077:
            return None, f"{target} is open to other users (mode {stat.S_IMODE(st.st_mode):o})"
        reason = unsafe_directory(target.parent)
        if reason:
            return None, reason
    try:
        info = json.loads(target.read_text())
        port, token = info["port"], info["token"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, None  # being written, or left by a killed server: no server to use
    if not isinstance(port, int) or not 0 < port < 65536 or not isinstance(token, str) or len(token) < 32:
        return None, f"{target} is not a diffcli token file"
    return info, None


def new_nonce() -> str:
    """A fresh random challenge for the TCP handshake (256 bits, hex)."""
    import secrets

    return secrets.token_hex(32)


def auth_field(message: dict | None, field: str, challenge: bool = False) -> str | None:
    """FIELD (a nonce, a proof) of a client's auth message, or of the server's challenge with CHALLENGE,
    when it is 32 to 128 hex digits; else None."""
    kind = ("type", "challenge") if challenge else ("op", "auth")
    if not isinstance(message, dict) or message.get(kind[0]) != kind[1]:
        return None
    value = message.get(field)
    if not isinstance(value, str) or not 32 <= len(value) <= 128:
        return None
    try:
        bytes.fromhex(value)
    except ValueError:
        return None
    return value


def proof(token: str, side: str, client_nonce: str, server_nonce: str) -> str:
    """What SIDE ("server" or "client") sends to show it knows TOKEN, bound to both nonces of this
    connection (a proof is good for that connection only, and one side's never passes for the other's)."""
    message = f"diffcli-{side}\n{client_nonce}\n{server_nonce}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def proof_matches(given: str | None, token: str, side: str, client_nonce: str, server_nonce: str) -> bool:
    """Whether GIVEN is SIDE's proof for this connection (compared in constant time)."""
    expected = proof(token, side, client_nonce, server_nonce)
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def try_lock(fd: int) -> bool:
    """Take the exclusive lock of the open file FD without waiting; False if another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def unsafe_directory(directory: Path) -> str | None:
    """Why DIRECTORY may not hold our socket (None: it may): it must be owned by us (or root) and
    writable by nobody else, unless sticky (/tmp), where others cannot replace our files."""
    try:
        st = os.stat(directory)
    except OSError as exc:
        return f"{directory}: {exc.strerror or exc}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{directory} is not a directory"
    if not hasattr(os, "getuid"):  # Windows: the user's own runtime directory, private by its ACL
        return None
    if st.st_uid not in (os.getuid(), 0):
        return f"{directory} belongs to another user (uid {st.st_uid})"
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        return f"{directory} is writable by other users"
    return None


def unsafe_socket(path: Path) -> str | None:
    """Why the file at PATH is not a server socket of ours (None: it is one)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    if not stat.S_ISSOCK(st.st_mode):
        return f"{path} is not a socket"
    if st.st_uid != os.getuid():
        return f"{path} belongs to another user (uid {st.st_uid}); not using it"
    if st.st_mode & 0o077:
        return f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):o})"
    return unsafe_directory(path.parent)


def make_private_directory(directory: Path) -> None:
    """Create DIRECTORY (mode 0700) if missing; raise UsageError if it is not safe to use."""
    from diffcli.errors import UsageError

    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the server directory {directory}: {exc.strerror or exc}") from None
    reason = unsafe_directory(directory)
    if reason:
        raise UsageError(f"refusing to put the server socket there: {reason}")


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket; None where the platform cannot say."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def compat_key() -> str:
    """What client and server must agree on for a job to run the same in either: diffcli's code
    (version and location) and the environment that decides models, device and threads."""
    import diffcli

    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(_COMPAT_PREFIXES) and k not in _COMPAT_IGNORED)
    payload = json.dumps(
        {
            "version": diffcli.__version__,
            "package": os.path.dirname(os.path.abspath(diffcli.__file__)),
            "python": sys.version_info[:2],
            "env": env,
        }
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class ProtocolError(Exception):
    """A message that is not one line of JSON object, or too long."""


class Channel:
    """One end of a connection: whole JSON lines in, whole JSON lines out (sends are thread-safe)."""

    def __init__(self, sock: socket.socket, limit: int = MAX_LINE) -> None:
        self.sock = sock
        self.limit = limit
        self.buffer = b""
        self.lock = threading.Lock()
        self.closed = False

    def send(self, message: dict) -> None:
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        with self.lock:
            self.sock.sendall(data)

    def try_send(self, message: dict) -> bool:
        """send, reporting a vanished peer as False instead of raising."""
        try:
            self.send(message)
            return True
        except OSError:
            return False

    def receive(self, timeout: float | None = None) -> dict | None:
        """The next message; None at end of stream. With TIMEOUT (seconds), raises TimeoutError when
        no whole message came in time."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > self.limit:
                raise ProtocolError(f"message longer than {self.limit} bytes")
            if timeout is not None:
                ready, _, _ = select.select([self.sock], [], [], timeout)
                if not ready:
                    raise TimeoutError()
            chunk = self.sock.recv(65536)
            if not chunk:
                if self.buffer:
                    raise ProtocolError("connection closed in the middle of a message")
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        if len(line) > self.limit:
            raise ProtocolError(f"message longer than {self.limit} bytes")
        try:
            message = json.loads(line)
        except RecursionError:  # [[[[… many thousand deep: the parser gives up, the channel answers
            raise ProtocolError("a message nested too deeply") from None
        except ValueError as exc:
            raise ProtocolError(f"not JSON: {exc}") from None
        if not isinstance(message, dict):
            raise ProtocolError("a message must be a JSON object")
        return message

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


def error_message(exc: BaseException) -> dict:
    """The wire form of an error that ended a job: its class name, one-line message and exit code."""
    from diffcli.errors import EXIT_FAILURE, DiffcliError

    if isinstance(exc, DiffcliError):
        return {"type": "error", "kind": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code}
    # what the CLI prints for an unexpected exception (cli/app.py)
    return {
        "type": "error",
        "kind": "RuntimeFailure",
        "exit_code": EXIT_FAILURE,
        "message": f"{type(exc).__name__}: {exc} (DIFFCLI_DEBUG=1 shows the traceback)",
    }


def error_from(message: dict) -> Exception:
    """The DiffcliError (same class where this process knows it, same message and exit code) that a
    server's error message describes."""
    from diffcli.errors import DiffcliError, RuntimeFailure

    kind, text = str(message.get("kind", "")), str(message.get("message", ""))
    code = message.get("exit_code")
    classes = {}
    pending = [DiffcliError]
    while pending:
        cls = pending.pop()
        classes.setdefault(cls.__name__, cls)
        pending.extend(cls.__subclasses__())
    cls = classes.get(kind, RuntimeFailure)
    try:
        exc = cls(text)
    except TypeError:  # a subclass with its own constructor
        exc = RuntimeFailure(text)
    if isinstance(code, int) and not isinstance(code, bool) and code != exc.exit_code and 0 < code < 256:
        exc.exit_code = code
    return exc

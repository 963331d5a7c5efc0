"""The HTTP front door (`diffcli serve --http HOST:PORT`): AUTOMATIC1111- and OpenAI-style endpoints.

Python's own http.server (threaded), no extra dependency: requests are small, jobs run one at a time
on the server's worker anyway, and every request is bounded (connections, a deadline for the whole
request, body size, JSON nesting, image requests in flight, pixels of uploaded images). Safety:

- binds 127.0.0.1 by default, open to every local user; --api-key KEY ("Authorization: Bearer KEY", or
  KEY as the HTTP Basic password) and/or --api-auth USER:PASSWORD (HTTP Basic, as A1111's) restrict it,
  and any other address needs one of them; credentials are compared in constant time;
- without credentials, the Host header must name a loopback address (no DNS rebinding) and a POST must
  be `application/json` (a browser page cannot send that to another origin without a CORS preflight,
  which is never granted); with or without, a request from a page of another site (Origin) is refused;
- a request names only a model already present (bundled, alias or hub id; never a path or URL),
  unless --allow-pull lets hub models download; it never names a file: inputs come in the body,
  outputs go to the server's --output-dir and come back base64 in the response;
- every field is type-checked here and then checked by the engine exactly as a command's flags are
  (Job validation, settle); errors are 4xx JSON.

    GET  /sdapi/v1/sd-models  /sdapi/v1/samplers  /sdapi/v1/progress
    POST /sdapi/v1/txt2img  /sdapi/v1/img2img  /sdapi/v1/interrupt
    POST /v1/images/generations  /v1/images/edits   (OpenAI: b64_json; edits as multipart/form-data)
    GET  /  /page/app.js  /page/style.css            (the web page, web.py)
    POST /v1/jobs   GET /v1/events   GET /v1/gallery  /v1/gallery/NAME   (its jobs, their live events as
                                                      Server-Sent Events (events.py), the output directory's images)

A request whose client goes away (the connection closed) before its image is made cancels its job,
queued or running, as Ctrl-C of a CLI client does.
"""

from __future__ import annotations

import base64
import hmac
import io
import ipaddress
import json
import math
import os
import re
import secrets
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from diffcli.errors import DiffcliError, UsageError
from diffcli.serve import api, web
from diffcli.serve.events import EventHub, JobEvents

MAX_BODY = 64 * 2**20  # bytes of one request (init images come base64 inside it)
MAX_CONNECTIONS = 64  # open at once, counted from accept (before headers or credentials); more get 503 at once
MAX_IN_FLIGHT = 16  # image requests (txt2img, img2img, generations, edits), from body to answer; more get 503
DEADLINE_S = 30.0  # a request (line, headers, body) must arrive whole within this of its connection opening
DEADLINE_ENV = "DIFFCLI_HTTP_DEADLINE"  # seconds, instead of DEADLINE_S (a slow link sending large images)
MAX_DEPTH = 32  # nesting of lists and objects in a JSON body
MAX_FORM_PARTS = 64  # parts of a multipart form (the edits form has a dozen fields and a few images)
ANSWER_CHUNK = 3 * 2**18  # bytes of an image base64-encoded at once while an answer is written
GONE_POLL_S = 0.25  # how often a waiting request checks that its client is still connected
STREAM_POLL_S = 1.0  # how often an idle event stream checks that its client is still connected
KEEPALIVE_S = 15.0  # an event stream without events for this long gets a comment line


@dataclass(frozen=True)
class HttpSettings:
    host: str
    port: int
    api_key: str | None
    output_dir: str  # absolute
    allow_pull: bool
    api_auth: tuple[str, str] | None = None  # (user, password): HTTP Basic, as A1111's --api-auth
    deadline_s: float = field(default_factory=lambda: request_deadline())  # $DIFFCLI_HTTP_DEADLINE, checked here


def request_deadline() -> float:
    """Seconds a request has to arrive whole: DEADLINE_S, or $DIFFCLI_HTTP_DEADLINE (e.g. 90 or 90s)."""
    text = os.environ.get(DEADLINE_ENV, "").strip()
    if not text:
        return DEADLINE_S
    try:
        value = float(text[:-1] if text.lower().endswith("s") else text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise UsageError(f"invalid {DEADLINE_ENV} '{text}'; use seconds, e.g. 30 or 90s (at most 3600)")
    return value


def check_settings(
    address: str, api_key: str | None, output_dir: str | None, allow_pull: bool, api_auth: str | None = None
) -> HttpSettings:
    """The --http flags checked: HOST:PORT, credentials for any non-loopback address, an absolute output dir."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", address.strip())
    if match is None:
        raise UsageError(f"invalid --http '{address}'; use HOST:PORT, e.g. 127.0.0.1:7860")
    host = match.group(1) or match.group(3) or "127.0.0.1"
    port = int(match.group(2) or match.group(4))
    if not 0 <= port <= 65535:
        raise UsageError(f"invalid --http port {port}")
    if api_key is not None and len(api_key) < 16:
        raise UsageError("--api-key must be at least 16 characters")
    user_password = None
    if api_auth is not None:
        user, _, password = api_auth.partition(":")
        if not user or not password:
            raise UsageError("--api-auth must be USER:PASSWORD")
        if len(password) < 16:
            raise UsageError("the --api-auth password must be at least 16 characters")
        user_password = (user, password)
    if not is_loopback(host) and not api_key and not user_password:
        raise UsageError(
            f"--http {address} listens beyond this machine; that needs --api-key or --api-auth "
            f"(or DIFFCLI_API_KEY, DIFFCLI_API_AUTH)"
        )
    out = os.path.abspath(os.path.expanduser(output_dir or os.path.join("outputs", "http")))
    return HttpSettings(host, port, api_key or None, out, allow_pull, user_password)


def auth_names(settings: HttpSettings) -> list[str]:
    """The credentials the API takes: "api-key", "basic"; none: open to every local user."""
    return [name for name, on in (("api-key", settings.api_key), ("basic", settings.api_auth)) if on]


def access(settings: HttpSettings) -> str:
    """Who can use the API, in words (`serve --status`, the start-up log line)."""
    needs = [
        what
        for what, on in (
            ("an API key (Bearer, or as the Basic password)", settings.api_key),
            ("user:password (Basic)", settings.api_auth),
        )
        if on
    ]
    return "needs " + " or ".join(needs) if needs else "open to every local user (no key)"


def credentials_match(header: str, settings: HttpSettings) -> bool:
    """Whether an Authorization HEADER carries the API key (Bearer, or as the Basic password) or the
    --api-auth user and password (Basic); every comparison in constant time."""
    import binascii

    scheme, _, value = header.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    key = settings.api_key.encode() if settings.api_key is not None else None
    if scheme == "bearer":
        return key is not None and hmac.compare_digest(value.encode(), key)
    if scheme != "basic":
        return False
    try:
        user, colon, password = base64.b64decode(value.encode(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return False
    if not colon:
        return False
    ok = False
    if settings.api_auth is not None:
        want_user, want_password = (part.encode() for part in settings.api_auth)
        ok = hmac.compare_digest(user, want_user) & hmac.compare_digest(password, want_password)
    if key is not None:
        ok = hmac.compare_digest(password, key) | ok
    return bool(ok)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the server ---------------------------------------------------------------------------------------


class HttpFrontDoor:
    """A threaded HTTP server that turns requests into Tasks for the server's worker."""

    def __init__(self, settings: HttpSettings, log=lambda line: None) -> None:
        self.settings = settings
        self.log = log
        self.worker = None
        self.last_active = time.monotonic()
        self.in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)  # image requests
        self.connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.active = 0
        self.lock = threading.Lock()
        self.tasks: list = []  # HTTP tasks queued or running
        self.events = EventHub()  # their progress, for the event streams (GET /v1/events)
        self.streams = 0  # event streams open: watching is not work (the server may still stop when idle)
        _preload()
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        server_class = type("DiffcliHTTPServer", (_Server,), {"address_family": family, "front": self})
        try:
            self.httpd = server_class((settings.host, settings.port), _handler(self))
        except OSError as exc:
            raise UsageError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
        host, port = self.httpd.server_address[:2]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.auth, self.access = auth_names(settings), access(settings)  # for `serve --status`
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.5}, name="diffcli-http", daemon=True
        )

    def start(self, worker) -> None:
        self.worker = worker
        self.thread.start()
        self.log(f"HTTP API on http://{self.address}: {self.access} (outputs: {self.settings.output_dir})")

    def stop(self) -> None:
        self.events.close()
        if self.thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()

    def busy(self) -> bool:
        with self.lock:
            return self.active - self.streams > 0

    # what a request does, once parsed and allowed

    def generate(
        self, job, inputs, gone=lambda: False, a1111_sampler: bool = False, keep: bool = False, submitted=None
    ) -> tuple[list[Path], list[str], bool]:
        """Run JOB on the worker; (the written paths, warnings, interrupted). The job is cancelled when
        GONE() says the client went away. A1111_SAMPLER: its scheduler was named by an A1111 sampler name
        (RunOptions.a1111_sampler). The images of a job that does not finish (interrupted, failed, its
        client gone) are removed unless KEEP (A1111's save_images); a finished job's are the caller's.
        Its events go to the event streams (events.py); SUBMITTED(task) is called once it is queued."""
        from diffcli.flags import build_options
        from diffcli.jobs import validate
        from diffcli.serve.reporter import Forwarder
        from diffcli.serve.worker import Stopping, Task

        opts = build_options(
            {
                "out": self.settings.output_dir + os.sep,
                "fmt": "png",
                "offline": not self.settings.allow_pull,
                "a1111_sampler": a1111_sampler,
                "names_only": True,
            }
        )
        written: list[str] = []  # each image as the job writes it (its result line: the path)
        task = Task(job=job, opts=opts, reporter=None, results=written.append, door="http")
        validate(job)  # what needs no model fails now, not after the jobs ahead (the engine checks it all again)
        warnings: list[str] = []
        events = JobEvents(self.events, task.id, self.shown, lambda text: api.public_message(text, inputs))
        task.reporter = Forwarder(
            lambda message: _collect(message, warnings) and events.forward(message),
            task.cancelled,
            task.progress,
            previews=lambda: self.events.wants_previews(task.id),
        )
        with self.lock:  # (at most MAX_IN_FLIGHT: each is a request's)
            self.tasks.append(task)
        try:
            try:
                ahead = self.worker.submit(task)
            except Stopping:
                raise api.HttpError(503, "the server is stopping", "Stopping") from None
            if ahead:
                events.emit("queued", position=ahead)
            if submitted is not None:
                submitted(task)
            while not task.done.wait(GONE_POLL_S):
                if not task.cancelled.is_set() and gone():
                    self.log(f"HTTP job {task.id}: the client went away; cancelling it")
                    self.worker.cancel(task)
        finally:
            if not keep and (task.outcome or {}).get("type") != "end":
                api.remove_files(written)  # no answer will carry them
            with self.lock:
                self.tasks.remove(task)
            inputs.remove()
            events.end(task.outcome)
        outcome = task.outcome or {}
        warnings = [api.public_message(w, inputs) for w in warnings]  # (a reply carries no server path)
        if outcome.get("type") == "end":
            return [Path(p) for p in outcome.get("paths", [])], warnings, False
        if outcome.get("kind") == "interrupted":
            return [], warnings, True
        status = 422 if outcome.get("exit_code") == 2 else 503 if outcome.get("kind") == "stopped" else 500
        raise api.HttpError(status, api.public_message(outcome.get("message"), inputs), str(outcome.get("kind")))

    def shown(self, path: str) -> str:
        """A written file as replies name it: its path in the output directory (never the server's path)."""
        relative = os.path.relpath(path, self.settings.output_dir)
        return Path(path).name if relative.startswith("..") or os.path.isabs(relative) else relative

    def start_job(self, job, inputs) -> int:
        """Run JOB (POST /v1/jobs) with no request waiting for it, its images kept (the gallery's); its
        task id once it is queued. It holds an image request's slot (MAX_IN_FLIGHT) until it ends; a
        client gone does not cancel it (POST /sdapi/v1/interrupt does). What fails before it is queued
        is raised here; what fails later is its events' `error`."""
        if not self.in_flight.acquire(blocking=False):
            inputs.remove()
            raise api.HttpError(
                503, f"too many image requests at once (at most {MAX_IN_FLIGHT}); try again later", "Busy"
            )
        started: dict = {}
        queued = threading.Event()

        def on_submit(task) -> None:
            started.update(id=task.id)
            queued.set()

        def run() -> None:
            try:
                self.generate(job, inputs, a1111_sampler=True, keep=True, submitted=on_submit)
            except (api.HttpError, DiffcliError) as exc:
                started.setdefault("error", exc)
            except Exception as exc:  # noqa: BLE001 - the thread must end cleanly; the log tells
                started.setdefault("error", exc)
                self.log(f"HTTP job: {type(exc).__name__}: {exc}")
            finally:
                if "id" not in started:  # refused before it was queued: its input files go now
                    inputs.remove()
                self.in_flight.release()
                queued.set()

        threading.Thread(target=run, name="diffcli-http-job", daemon=True).start()
        queued.wait()
        if "id" not in started:
            raise started.get("error") or api.HttpError(500, "the job did not start", "RuntimeFailure")
        return started["id"]

    def interrupt(self) -> None:
        with self.lock:
            tasks = list(self.tasks)
        current = self.worker.counts().get("current") if self.worker else None
        for task in tasks:
            if current and task.id == current["id"]:
                self.worker.cancel(task)

    def progress(self) -> dict:
        current = None
        if self.worker is not None:
            with self.worker.cond:
                current = self.worker.current
        with self.lock:
            waiting = len(self.tasks)
        state = {
            "skipped": False,
            "interrupted": False,
            "job": "",
            "job_count": waiting,
            "job_timestamp": "0",
            "job_no": 0,
            "sampling_step": 0,
            "sampling_steps": 0,
        }
        if current is None or current.done.is_set():  # finished: the worker may still be tidying up after it
            return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
        p = dict(current.progress)
        images, steps = p.get("images") or 1, p.get("steps") or 1
        image, count, step = p.get("image") or 1, p.get("count") or 1, p.get("step") or 0
        fraction = min(1.0, ((image - 1) + count * step / steps) / images)
        elapsed = time.monotonic() - p.get("t0", time.monotonic())
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        state.update(
            job=f"job {current.id}", sampling_step=step, sampling_steps=steps, interrupted=current.cancelled.is_set()
        )
        return {
            "progress": round(fraction, 4),
            "eta_relative": round(eta, 2),
            "state": state,
            "current_image": None,
            "textinfo": None,
        }


class _Server(ThreadingHTTPServer):
    """Python's threaded HTTP server with at most MAX_CONNECTIONS connections (threads) at once, counted
    from accept: one more is answered 503 at once, without waiting for its request."""

    daemon_threads = True
    request_queue_size = 2 * MAX_CONNECTIONS  # the listen backlog (socketserver's 5 holds connections unseen)
    front: HttpFrontDoor

    def process_request(self, request, client_address) -> None:
        if not self.front.connections.acquire(blocking=False):
            _refuse(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.front.connections.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.front.connections.release()

    def handle_error(self, request, client_address) -> None:  # one line in the log, not a traceback
        exc = sys.exc_info()[1]
        self.front.log(f"HTTP connection from {client_address[0]}: {type(exc).__name__}: {exc}")


def _refuse(sock: socket.socket) -> None:
    """Answer 503 on a connection over MAX_CONNECTIONS, never waiting for it (what it sent already is read
    first: closing it with bytes unread would reset the connection, answer and all)."""
    body = json.dumps(
        {"error": "Busy", "detail": f"too many connections at once (at most {MAX_CONNECTIONS}); try again later"}
    ).encode()
    try:
        sock.setblocking(False)
        try:
            sock.recv(65536)
        except OSError:
            pass
        sock.send(
            b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
    except OSError:
        pass


class _DeadlineReader(io.RawIOBase):
    """A connection's bytes, each read waiting only until DEADLINE (time.monotonic()): the request as a
    whole must have arrived by then, however it trickles in."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self.sock, self.deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request did not arrive in time")
        self.sock.settimeout(remaining)
        return self.sock.recv_into(buffer)


def _too_deep(value, limit: int = MAX_DEPTH) -> bool:
    """Whether VALUE (parsed JSON) nests lists and objects more than LIMIT deep."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _challenge(settings: HttpSettings) -> str:
    """The WWW-Authenticate value of a 401: the schemes this API takes."""
    return ", ".join(([] if settings.api_key is None else ["Bearer"]) + ['Basic realm="diffcli"'])


def _collect(message: dict, warnings: list[str]) -> bool:
    if message.get("name") == "warn":
        warnings.append(str(message["args"].get("message")))
    return True


def _preload() -> None:
    """Import, on the main thread before the worker starts, what request threads use: imports from
    several threads at once are not safe with diffusers-style lazy modules."""
    import PIL.Image  # noqa: F401
    import PIL.PngImagePlugin  # noqa: F401

    import diffcli.bundled  # noqa: F401
    import diffcli.models.aliases  # noqa: F401
    import diffcli.models.names  # noqa: F401
    import diffcli.pipelines  # noqa: F401
    import diffcli.run  # noqa: F401
    import diffcli.schedulers  # noqa: F401
    from diffcli.models import inventory

    try:
        inventory.items()
    except DiffcliError:
        pass


class _Handler(BaseHTTPRequestHandler):
    """One request to the HTTP API; a subclass per server sets FRONT (see `_handler`)."""

    front: HttpFrontDoor
    server_version = "diffcli"
    sys_version = ""
    timeout = None  # set before each read (the request's deadline) and each answer (settings.deadline_s)

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the socket's plain reader, replaced by one that keeps the request's deadline
        self.rfile = io.BufferedReader(
            _DeadlineReader(self.connection, time.monotonic() + self.front.settings.deadline_s)
        )

    def log_message(self, fmt, *args) -> None:  # the server log gets one line per request, not stderr
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        with self.front.lock:
            self.front.active += 1
        try:
            self._route(method)
        except api.HttpError as exc:
            self._error(exc.status, str(exc), exc.kind)
        except DiffcliError as exc:
            self._error(422 if exc.exit_code == 2 else 500, str(exc), type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the server down
            self.front.log(f"HTTP {method} {self.path}: {type(exc).__name__}: {exc}")
            self._error(500, f"{type(exc).__name__}: {exc}", "RuntimeFailure")
        finally:
            with self.front.lock:
                self.front.active -= 1
            self.front.last_active = time.monotonic()

    def _route(self, method: str) -> None:
        self._check_access()
        path = self._path()
        routes = {
            ("GET", "/sdapi/v1/sd-models"): lambda: self._json(200, api.models()),
            ("GET", "/sdapi/v1/samplers"): lambda: self._json(200, api.samplers()),
            ("GET", "/sdapi/v1/progress"): lambda: self._json(200, self.front.progress()),
            ("POST", "/sdapi/v1/interrupt"): self._interrupt,
            ("POST", "/sdapi/v1/txt2img"): lambda: self._images(lambda: self._a1111("txt2img")),
            ("POST", "/sdapi/v1/img2img"): lambda: self._images(lambda: self._a1111("img2img")),
            ("POST", "/v1/images/generations"): lambda: self._images(self._openai),
            ("POST", "/v1/images/edits"): lambda: self._images(self._openai_edit),
            ("POST", "/v1/jobs"): self._jobs,
            ("GET", "/v1/events"): self._events,
            ("GET", "/v1/gallery"): lambda: self._json(200, {"images": web.listing(self.front.settings.output_dir)}),
            **{("GET", route): self._page for route in web.PAGE},
        }
        if path.startswith(web.GALLERY_PREFIX):
            routes[("GET", path)] = lambda: self._gallery_file(path[len(web.GALLERY_PREFIX) :])
        action = routes.get((method, path))
        if action is None:
            known = {p for _, p in routes}
            raise api.HttpError(
                405 if path in known else 404,
                f"{method} {path}: {'method not allowed' if path in known else 'no such endpoint'}",
                "NotFound",
            )
        action()

    def _path(self) -> str:
        """The request's path, without its query."""
        return self.path.split("?", 1)[0]

    def _media_type(self) -> str:
        """The body's Content-Type without its parameters, lower case ("" when none is given)."""
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def _check_access(self) -> None:
        host = (self.headers.get("Host") or "").strip()
        if self.front.auth:
            if not credentials_match(self.headers.get("Authorization", ""), self.front.settings):
                raise api.HttpError(401, f"missing or wrong credentials: this API {self.front.access}", "Unauthorized")
        else:
            name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
            if not is_loopback(name):  # a page on another site resolving its name to 127.0.0.1
                raise api.HttpError(403, f"Host '{host}' is not this machine; use 127.0.0.1", "Forbidden")
        # with credentials too: a browser adds Basic credentials it holds to any request, a page's included
        origin = self.headers.get("Origin")
        if origin is not None and origin.rstrip("/") != f"http://{host}":
            # a page of another site (browsers name it in Origin): it could POST a form, which
            # needs no CORS preflight, so it is refused outright
            raise api.HttpError(403, f"requests from pages of other sites ({origin[:80]}) are refused", "Forbidden")

    def _body(self) -> dict:
        kind = self._media_type()
        if kind != "application/json":
            raise api.HttpError(415, "send the request body as application/json", "UnsupportedMediaType")
        raw = self._raw()
        too_deep = api.HttpError(400, f"request body is nested too deeply (at most {MAX_DEPTH} levels)", "BadRequest")
        try:
            body = json.loads(raw)
        except RecursionError:
            raise too_deep from None
        except ValueError as exc:
            raise api.HttpError(400, f"request body is not JSON: {exc}", "BadRequest") from None
        if _too_deep(body):
            raise too_deep
        if not isinstance(body, dict):
            raise api.HttpError(400, "request body must be a JSON object", "BadRequest")
        return body

    def _form(self) -> dict[str, list]:
        """A multipart/form-data body: field name -> its values (str, or bytes for a file)."""
        from email.parser import BytesParser
        from email.policy import HTTP

        content_type = self.headers.get("Content-Type") or ""
        if self._media_type() != "multipart/form-data" or "boundary=" not in content_type:
            raise api.HttpError(415, "send the request body as multipart/form-data", "UnsupportedMediaType")
        raw = self._raw()
        # every boundary line, at any depth, starts a line with "--": counted before the parser (about
        # 0.5 ms a part) meets a small body of many thousand empty parts
        if raw.count(b"\n--") + raw.startswith(b"--") > MAX_FORM_PARTS + 1:
            raise api.HttpError(400, f"a form of more than {MAX_FORM_PARTS} parts", "BadRequest")
        try:
            message = BytesParser(policy=HTTP).parsebytes(
                b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
            )
        except RecursionError:  # multipart in multipart in ...
            raise api.HttpError(400, "request body is nested too deeply", "BadRequest") from None
        if not message.is_multipart():
            raise api.HttpError(400, "request body is not multipart/form-data", "BadRequest")
        fields: dict[str, list] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not name:
                raise api.HttpError(400, "a form part has no name", "BadRequest")
            data = part.get_payload(decode=True) or b""
            if part.get_filename() is None:
                try:
                    data = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise api.HttpError(400, f"form field '{name}' is not UTF-8 text", "BadRequest") from None
            fields.setdefault(str(name), []).append(data)
        return fields

    def _raw(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise api.HttpError(411, "Content-Length is required", "LengthRequired") from None
        if length < 0:
            raise api.HttpError(400, f"Content-Length {length} is not a length", "BadRequest")
        if length > MAX_BODY:
            raise api.HttpError(413, f"request body over {MAX_BODY} bytes", "TooLarge")
        try:
            raw = self.rfile.read(length)
        except TimeoutError:
            raise api.HttpError(
                408, f"the request did not arrive within {self.front.settings.deadline_s:g} s", "Timeout"
            ) from None
        if len(raw) != length:
            raise api.HttpError(400, "request body cut short", "BadRequest")
        return raw

    def _gone(self) -> bool:
        """Whether the client closed its connection (it waits for nothing more)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _images(self, action) -> None:
        """ACTION, an endpoint that makes images, in one of MAX_IN_FLIGHT slots (from its body to its answer)."""
        if not self.front.in_flight.acquire(blocking=False):
            raise api.HttpError(
                503, f"too many image requests at once (at most {MAX_IN_FLIGHT}); try again later", "Busy"
            )
        try:
            action()
        finally:
            self.front.in_flight.release()

    def _a1111(self, task: str) -> None:
        body = self._body()
        save = api.typed("save_images", body.get("save_images", False), bool)
        send = api.typed("send_images", body.get("send_images", True), bool)
        inputs = api.Inputs(self.front.settings.output_dir)
        try:
            job = api.a1111_job(body, task, inputs)
            paths, warnings, interrupted = self.front.generate(job, inputs, self._gone, a1111_sampler=True, keep=save)
        finally:
            inputs.remove()
        try:
            infotexts, seeds = api.image_info(paths)
            info = {
                "prompt": job.prompt,
                "negative_prompt": job.negative or "",
                "all_seeds": seeds,
                "seed": seeds[0] if seeds else None,
                "infotexts": infotexts,
                "warnings": warnings,
                "interrupted": interrupted,
            }
            if not (send or save):  # gone before the answer's end, as images sent are
                api.remove_files(paths)
            self._send_images(
                {
                    "images": None,
                    "parameters": body
                    if task == "txt2img"
                    else {k: v for k, v in body.items() if k not in ("init_images", "mask")},
                    "info": json.dumps(info),
                },
                "images",
                paths if send else [],  # send_images false: `"images": []`, as A1111 answers
                remove=not save,
            )
        finally:
            if not save:
                api.remove_files(paths)

    def _openai(self, edit: bool = False) -> None:
        inputs = api.Inputs(self.front.settings.output_dir)
        try:
            if edit:
                job = api.openai_edit_job(self._form(), inputs)
            else:
                job = api.openai_job(self._body())
            paths, _warnings, interrupted = self.front.generate(job, inputs, self._gone)
        except (api.HttpError, DiffcliError) as exc:  # OpenAI's shape: 400 for any bad request
            status = getattr(exc, "status", 400 if getattr(exc, "exit_code", 1) == 2 else 500)
            status = 400 if status == 422 else status
            self._json(status, openai_error(api.public_message(exc), status))  # (a reply carries no server path)
            return
        finally:
            inputs.remove()
        if interrupted:
            self._json(409, openai_error("interrupted", 500))
            return
        try:
            self._send_images(
                {"created": int(time.time()), "data": None},
                "data",
                paths,
                {"b64_json": None, "revised_prompt": None},
            )
        finally:
            api.remove_files(paths)

    def _openai_edit(self) -> None:
        self._openai(edit=True)

    # the page, its jobs, their events and the gallery (docs/serve.md, "The page")

    def _page(self) -> None:
        data, kind = web.page_file(self._path())
        self._head(200, len(data), web.PAGE_HEADERS, kind)
        self.wfile.write(data)

    def _jobs(self) -> None:
        """POST /v1/jobs: an A1111 txt2img body (img2img with `init_images`; on a model that edits by
        instruction, an edit: the prompt is the instruction) run without the request waiting for it, its
        images kept in the output directory (the gallery); 202 {"id", "events"} once queued."""
        body = self._body()
        inputs = api.Inputs(self.front.settings.output_dir)
        try:
            job = api.a1111_job(body, "img2img" if body.get("init_images") is not None else "txt2img", inputs)
            if job.task == "img2img":
                from diffcli.run import model_edits

                if model_edits(job.model):  # the page's start image on a model that edits: the prompt instructs
                    job = replace(job, task="edit", strength=None)
        except BaseException:
            inputs.remove()
            raise
        job_id = self.front.start_job(job, inputs)
        self._json(202, {"id": job_id, "events": f"/v1/events?job={job_id}"})

    def _events(self) -> None:
        """GET /v1/events[?job=ID][&previews=0]: Server-Sent Events of every HTTP job (or of job ID, from its
        start to its end), each `data:` the job's --json event plus `job_id` (events.py). Closing it
        cancels nothing."""
        from urllib.parse import parse_qs

        query = parse_qs(self.path.partition("?")[2])
        job = query.get("job", [None])[-1]
        if job is not None and not (job.isascii() and job.isdigit() and len(job) < 16):
            raise api.HttpError(400, "'job' must be a job id (a number)", "BadRequest")
        previews = query.get("previews", ["1"])[-1].lower() not in ("0", "false", "no", "off")
        stream = self.front.events.open(None if job is None else int(job), previews)
        with self.front.lock:
            self.front.streams += 1
        try:
            self._head(200, None, {"X-Accel-Buffering": "no"}, "text/event-stream; charset=utf-8")
            self.wfile.write(b": diffcli events\n\n")
            quiet_since = time.monotonic()
            while (events := self.front.events.next(stream, STREAM_POLL_S)) is not None:
                if events:
                    self.wfile.write(b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events))
                    quiet_since = time.monotonic()
                elif self._gone():
                    break
                elif time.monotonic() - quiet_since > KEEPALIVE_S:
                    self.wfile.write(b": keep-alive\n\n")
                    quiet_since = time.monotonic()
        except OSError:
            pass  # the client went away: it only watched
        finally:
            self.front.events.close_stream(stream)
            with self.front.lock:
                self.front.streams -= 1

    def _gallery_file(self, quoted: str) -> None:
        """GET /v1/gallery/NAME: an image of the output directory, and nothing else (web.open_image)."""
        from urllib.parse import unquote

        name = unquote(quoted)
        fh = web.open_image(self.front.settings.output_dir, name)
        if fh is None:
            raise api.HttpError(404, "no such image in the gallery", "NotFound")
        with fh:
            size = os.fstat(fh.fileno()).st_size
            self._head(200, size, None, web.IMAGE_TYPES[os.path.splitext(name)[1].lower()])
            while chunk := fh.read(ANSWER_CHUNK):
                self.wfile.write(chunk)

    def _interrupt(self) -> None:
        """POST /sdapi/v1/interrupt: no body (A1111 clients send none) or a JSON one, which is ignored; a form
        or text (what a page of another site could send without a preflight) is refused, as on other POSTs."""
        kind = self._media_type()
        if kind not in ("", "application/json"):
            raise api.HttpError(415, "send no body, or an application/json one", "UnsupportedMediaType")
        self.front.interrupt()
        self._json(200, {})

    def _error(self, status: int, message: str, kind: str) -> None:
        """The error answer: OpenAI's shape on its routes (/v1/images/…), else {"error": KIND, "detail": …}."""
        text = api.public_message(message)
        if self._path().startswith("/v1/images/"):
            payload = openai_error(text, status, "invalid_api_key" if status == 401 else None)
        else:
            payload = {"error": kind, "detail": text}
        try:
            self._json(
                status, payload, {"WWW-Authenticate": _challenge(self.front.settings)} if status == 401 else None
            )
        except OSError:
            pass

    def _send_images(
        self, payload: dict, key: str, paths: list[Path], item: dict | None = None, remove: bool = True
    ) -> None:
        """Answer 200 with PAYLOAD, its KEY the list of the images at PATHS base64 (each as ITEM with its
        first key the image, or bare), written one image and one chunk at a time: the answer is never
        whole in memory (its length comes from the files' sizes). With REMOVE each file goes once it is
        read, before the answer's last bytes. A client gone meanwhile is logged."""
        mark = secrets.token_hex(16)  # stands for the images in the JSON around them
        head, tail = (part.encode() for part in json.dumps({**payload, key: mark}).split(f'"{mark}"'))
        before, after = b'"', b'"'
        if item is not None:
            first, second = json.dumps({**item, next(iter(item)): mark}).split(f'"{mark}"')
            before, after = first.encode() + b'"', b'"' + second.encode()
        sizes = [path.stat().st_size for path in paths]
        length = (
            len(head)
            + 2
            + len(tail)
            + 2 * max(0, len(paths) - 1)
            + sum(len(before) + 4 * math.ceil(size / 3) + len(after) for size in sizes)
        )
        try:
            self._head(200, length)
            self.wfile.write(head + b"[")
            for i, path in enumerate(paths):
                self.wfile.write((b", " if i else b"") + before)
                with open(path, "rb") as fh:
                    while chunk := fh.read(ANSWER_CHUNK):  # a multiple of 3 bytes: base64 pieces join
                        self.wfile.write(base64.b64encode(chunk))
                if remove:
                    path.unlink(missing_ok=True)
                self.wfile.write(after)
            self.wfile.write(b"]" + tail)
        except OSError as exc:
            self.close_connection = True
            self.front.log(
                f"HTTP {self.command} {self.path}: the client went away before its answer was sent "
                f"({type(exc).__name__})"
            )

    def _head(
        self, status: int, length: int | None, headers: dict | None = None, kind: str = "application/json"
    ) -> None:
        """The answer's status line and headers: KIND, LENGTH bytes (None: until the connection closes)."""
        self.connection.settimeout(self.front.settings.deadline_s)  # for each write of the answer
        self.send_response(status)
        self.send_header("Content-Type", kind)
        if length is not None:
            self.send_header("Content-Length", str(length))
        else:
            self.close_connection = True
            self.send_header("Connection", "close")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def _json(self, status: int, payload, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self._head(status, len(data), headers)
        self.wfile.write(data)


def openai_error(message: str, status: int, code: str | None = None) -> dict:
    """An error answer in OpenAI's shape (its clients read `error.message`)."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _handler(front: HttpFrontDoor) -> type[_Handler]:
    """The handler class for the server of FRONT."""
    return type("Handler", (_Handler,), {"front": front})

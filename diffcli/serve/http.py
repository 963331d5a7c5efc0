"""The HTTP front door (`diffcli serve --http HOST:PORT`): AUTOMATIC1111- and OpenAI-style endpoints.

Python's own http.server (threaded), no extra dependency: requests are small, jobs run one at a time
on the server's worker anyway, and every request is bounded (body size, header read timeout, requests
in flight). Safety:

- binds 127.0.0.1 by default; any other address needs --api-key ("Authorization: Bearer KEY");
- without a key, the Host header must name a loopback address (no DNS rebinding) and a POST must be
  `application/json` (a browser page cannot send that to another origin without a CORS preflight,
  which is never granted);
- a request names only a model already present (bundled, alias or hub id; never a path or URL),
  unless --allow-pull lets hub models download; it never names a file: inputs come in the body,
  outputs go to the server's --output-dir and come back base64 in the response;
- every field is type-checked here and then checked by the engine exactly as a command's flags are
  (Job validation, settle); errors are 4xx JSON.

    GET  /sdapi/v1/sd-models  /sdapi/v1/samplers  /sdapi/v1/progress
    POST /sdapi/v1/txt2img  /sdapi/v1/img2img  /sdapi/v1/interrupt
    POST /v1/images/generations  /v1/images/edits   (OpenAI: b64_json; edits as multipart/form-data)

A request whose client goes away (the connection closed) before its image is made cancels its job,
queued or running, as Ctrl-C of a CLI client does.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import re
import select
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from diffcli.errors import DiffcliError, UsageError
from diffcli.serve import api

MAX_BODY = 64 * 2**20  # bytes of one request (init images come base64 inside it)
MAX_IN_FLIGHT = 16  # requests handled at once; more get 503
MAX_WAITING_JOBS = 32  # HTTP jobs queued or running; more get 503
READ_TIMEOUT_S = 30.0  # for a request's headers and body
GONE_POLL_S = 0.25  # how often a waiting request checks that its client is still connected


@dataclass(frozen=True)
class HttpSettings:
    host: str
    port: int
    api_key: str | None
    output_dir: str  # absolute
    allow_pull: bool


def check_settings(address: str, api_key: str | None, output_dir: str | None, allow_pull: bool) -> HttpSettings:
    """The --http flags checked: HOST:PORT, a key for any non-loopback address, an absolute output dir."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", address.strip())
    if match is None:
        raise UsageError(f"invalid --http '{address}'; use HOST:PORT, e.g. 127.0.0.1:7860")
    host = match.group(1) or match.group(3) or "127.0.0.1"
    port = int(match.group(2) or match.group(4))
    if not 0 <= port <= 65535:
        raise UsageError(f"invalid --http port {port}")
    if api_key is not None and len(api_key) < 16:
        raise UsageError("--api-key must be at least 16 characters")
    if not is_loopback(host) and not api_key:
        raise UsageError(f"--http {address} listens beyond this machine; that needs --api-key (or DIFFCLI_API_KEY)")
    out = os.path.abspath(os.path.expanduser(output_dir or os.path.join("outputs", "http")))
    return HttpSettings(host, port, api_key or None, out, allow_pull)


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
        self.in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        self.active = 0
        self.lock = threading.Lock()
        self.tasks: list = []  # HTTP tasks queued or running
        _preload()
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        server_class = type("DiffcliHTTPServer", (ThreadingHTTPServer,), {"address_family": family,
                                                                          "daemon_threads": True})
        try:
            self.httpd = server_class((settings.host, settings.port), _handler(self))
        except OSError as exc:
            raise UsageError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
        host, port = self.httpd.server_address[:2]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                       name="diffcli-http", daemon=True)

    def start(self, worker) -> None:
        self.worker = worker
        self.thread.start()
        self.log(f"HTTP API on http://{self.address} (outputs: {self.settings.output_dir})")

    def stop(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()

    def busy(self) -> bool:
        with self.lock:
            return self.active > 0

    # what a request does, once parsed and allowed

    def generate(self, job, inputs, gone=lambda: False,
                 a1111_sampler: bool = False) -> tuple[list[Path], list[str], bool]:
        """Run JOB on the worker; (the written paths, warnings, interrupted). The job is cancelled when
        GONE() says the client went away. A1111_SAMPLER: its scheduler was named by an A1111 sampler name
        (RunOptions.a1111_sampler)."""
        from diffcli.jobs import validate
        from diffcli.pipelines import LoadOptions
        from diffcli.run import RunOptions
        from diffcli.serve.reporter import Forwarder
        from diffcli.serve.worker import Stopping, Task

        opts = RunOptions(out=self.settings.output_dir + os.sep, fmt="png", offline=not self.settings.allow_pull,
                          a1111_sampler=a1111_sampler, load=LoadOptions())
        task = Task(job=job, opts=opts, reporter=None, results=lambda line: None, door="http")
        validate(job)  # what needs no model fails now, not after the jobs ahead (the engine checks it all again)
        warnings: list[str] = []
        task.reporter = Forwarder(lambda message: _collect(message, warnings), task.cancelled, task.progress)
        with self.lock:
            if len(self.tasks) >= MAX_WAITING_JOBS:
                raise api.HttpError(503, "too many jobs waiting; try again later", "Busy")
            self.tasks.append(task)
        try:
            try:
                self.worker.submit(task)
            except Stopping:
                raise api.HttpError(503, "the server is stopping", "Stopping") from None
            while not task.done.wait(GONE_POLL_S):
                if not task.cancelled.is_set() and gone():
                    self.log(f"HTTP job {task.id}: the client went away; cancelling it")
                    self.worker.cancel(task)
        finally:
            with self.lock:
                self.tasks.remove(task)
            inputs.remove()
        outcome = task.outcome or {}
        if outcome.get("type") == "end":
            return [Path(p) for p in outcome.get("paths", [])], warnings, False
        if outcome.get("kind") == "interrupted":
            return [], warnings, True
        status = 422 if outcome.get("exit_code") == 2 else 503 if outcome.get("kind") == "stopped" else 500
        raise api.HttpError(status, str(outcome.get("message")), str(outcome.get("kind")))

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
        state = {"skipped": False, "interrupted": False, "job": "", "job_count": waiting, "job_timestamp": "0",
                 "job_no": 0, "sampling_step": 0, "sampling_steps": 0}
        if current is None or current.done.is_set():  # finished: the worker may still be tidying up after it
            return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
        p = dict(current.progress)
        images, steps = p.get("images") or 1, p.get("steps") or 1
        image, count, step = p.get("image") or 1, p.get("count") or 1, p.get("step") or 0
        fraction = min(1.0, ((image - 1) + count * step / steps) / images)
        elapsed = time.monotonic() - p.get("t0", time.monotonic())
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        state.update(job=f"job {current.id}", sampling_step=step, sampling_steps=steps,
                     interrupted=current.cancelled.is_set())
        return {"progress": round(fraction, 4), "eta_relative": round(eta, 2), "state": state, "current_image": None,
                "textinfo": None}


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
    import diffcli.pipelines  # noqa: F401
    import diffcli.run  # noqa: F401
    import diffcli.models.aliases  # noqa: F401
    import diffcli.models.names  # noqa: F401
    import diffcli.schedulers  # noqa: F401
    from diffcli.models import inventory

    try:
        inventory.items()
    except DiffcliError:
        pass


def _handler(front: HttpFrontDoor):
    settings = front.settings

    class Handler(BaseHTTPRequestHandler):
        server_version = "diffcli"
        sys_version = ""
        timeout = READ_TIMEOUT_S

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
            if not front.in_flight.acquire(blocking=False):
                self._error(503, "too many requests at once; try again later", "Busy")
                return
            with front.lock:
                front.active += 1
            try:
                self._route(method)
            except api.HttpError as exc:
                self._error(exc.status, str(exc), exc.kind)
            except DiffcliError as exc:
                self._error(422 if exc.exit_code == 2 else 500, str(exc), type(exc).__name__)
            except Exception as exc:  # noqa: BLE001 - one bad request must not take the server down
                front.log(f"HTTP {method} {self.path}: {type(exc).__name__}: {exc}")
                self._error(500, f"{type(exc).__name__}: {exc}", "RuntimeFailure")
            finally:
                with front.lock:
                    front.active -= 1
                front.last_active = time.monotonic()
                front.in_flight.release()

        def _route(self, method: str) -> None:
            self._check_access()
            path = self.path.split("?", 1)[0]
            routes = {
                ("GET", "/sdapi/v1/sd-models"): lambda: self._json(200, api.models()),
                ("GET", "/sdapi/v1/samplers"): lambda: self._json(200, api.samplers()),
                ("GET", "/sdapi/v1/progress"): lambda: self._json(200, front.progress()),
                ("POST", "/sdapi/v1/interrupt"): self._interrupt,
                ("POST", "/sdapi/v1/txt2img"): lambda: self._a1111("txt2img"),
                ("POST", "/sdapi/v1/img2img"): lambda: self._a1111("img2img"),
                ("POST", "/v1/images/generations"): self._openai,
                ("POST", "/v1/images/edits"): self._openai_edit,
            }
            action = routes.get((method, path))
            if action is None:
                known = {p for _, p in routes}
                raise api.HttpError(405 if path in known else 404, f"{method} {path}: "
                                f"{'method not allowed' if path in known else 'no such endpoint'}", "NotFound")
            action()

        def _check_access(self) -> None:
            if settings.api_key is not None:
                given = self.headers.get("Authorization", "")
                scheme, _, token = given.partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                         settings.api_key.encode()):
                    raise api.HttpError(401, "missing or wrong API key (Authorization: Bearer KEY)", "Unauthorized")
                return
            host = (self.headers.get("Host") or "").strip()
            name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
            if not is_loopback(name):  # a page on another site resolving its name to 127.0.0.1
                raise api.HttpError(403, f"Host '{host}' is not this machine; use 127.0.0.1", "Forbidden")
            origin = self.headers.get("Origin")
            if origin is not None and origin.rstrip("/") != f"http://{host}":
                # a page of another site (browsers name it in Origin): it could POST a form, which
                # needs no CORS preflight, so it is refused outright
                raise api.HttpError(403, f"requests from pages of other sites ({origin[:80]}) are refused", "Forbidden")

        def _body(self) -> dict:
            kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if kind != "application/json":
                raise api.HttpError(415, "send the request body as application/json", "UnsupportedMediaType")
            raw = self._raw()
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise api.HttpError(400, f"request body is not JSON: {exc}", "BadRequest") from None
            if not isinstance(body, dict):
                raise api.HttpError(400, "request body must be a JSON object", "BadRequest")
            return body

        def _form(self) -> dict[str, list]:
            """A multipart/form-data body: field name -> its values (str, or bytes for a file)."""
            from email.parser import BytesParser
            from email.policy import HTTP

            content_type = self.headers.get("Content-Type") or ""
            if content_type.split(";")[0].strip().lower() != "multipart/form-data" or "boundary=" not in content_type:
                raise api.HttpError(415, "send the request body as multipart/form-data", "UnsupportedMediaType")
            raw = self._raw()
            message = BytesParser(policy=HTTP).parsebytes(
                b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw)
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
            if length < 0 or length > MAX_BODY:
                raise api.HttpError(413, f"request body over {MAX_BODY} bytes", "TooLarge")
            raw = self.rfile.read(length)
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

        def _a1111(self, task: str) -> None:
            body = self._body()
            save = api.typed("save_images", body.get("save_images", False), bool)
            api.typed("send_images", body.get("send_images", True), bool)
            inputs = api.Inputs(settings.output_dir)
            try:
                job = api.a1111_job(body, task, inputs)
                paths, warnings, interrupted = front.generate(job, inputs, self._gone, a1111_sampler=True)
            finally:
                inputs.remove()
            images, infotexts, seeds = api.encode(paths, remove=not save)
            info = {"prompt": job.prompt, "negative_prompt": job.negative or "", "all_seeds": seeds,
                    "seed": seeds[0] if seeds else None, "infotexts": infotexts, "warnings": warnings,
                    "interrupted": interrupted}
            self._json(200, {"images": images, "parameters": body if task == "txt2img" else
                             {k: v for k, v in body.items() if k not in ("init_images", "mask")},
                             "info": json.dumps(info)})

        def _openai(self, edit: bool = False) -> None:
            inputs = api.Inputs(settings.output_dir)
            try:
                if edit:
                    job = api.openai_edit_job(self._form(), inputs)
                else:
                    job = api.openai_job(self._body())
                paths, _warnings, interrupted = front.generate(job, inputs, self._gone)
            except (api.HttpError, DiffcliError) as exc:  # OpenAI's shape: 400 for any bad request
                status = getattr(exc, "status", 400 if getattr(exc, "exit_code", 1) == 2 else 500)
                kind = "invalid_request_error" if status < 500 else "server_error"
                self._json(400 if status == 422 else status, {"error": {"message": str(exc), "type": kind,
                                                                        "param": None, "code": None}})
                return
            finally:
                inputs.remove()
            if interrupted:
                self._json(409, {"error": {"message": "interrupted", "type": "server_error", "param": None,
                                           "code": None}})
                return
            images, _, _ = api.encode(paths, remove=True)
            self._json(200, {"created": int(time.time()), "data": [{"b64_json": b, "revised_prompt": None}
                                                                   for b in images]})

        def _openai_edit(self) -> None:
            self._openai(edit=True)

        def _interrupt(self) -> None:
            front.interrupt()
            self._json(200, {})

        def _error(self, status: int, message: str, kind: str) -> None:
            try:
                self._json(status, {"error": kind, "detail": message},
                           {"WWW-Authenticate": "Bearer"} if status == 401 else None)
            except OSError:
                pass

        def _json(self, status: int, payload, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler

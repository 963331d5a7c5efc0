"""The server's engine side: requests checked into Jobs, a queue, one worker thread running them.

torch is not thread-safe for concurrent generation here, so one thread runs every job, one at a time,
through the same engine calls a CLI command makes (diffcli.run.settle / plan_outputs / execute).
Whatever door a request came through, everything in it is checked again here: the server is the
trust boundary.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field, replace

from diffcli import schema
from diffcli.errors import UsageError
from diffcli.jobs import Job, check_max_pixels, validate
from diffcli.schema import wire_types
from diffcli.serve.reporter import Cancelled

_JOB_FIELDS = set(schema.names(Job))


def _typed_values(data, types: dict, key: str, what: str, source: str) -> dict:
    """DATA (the request's KEY) with every field converted to its type in TYPES (field -> schema.Wire) and its
    choices checked (schema.checked); None values left out, a field TYPES lacks refused."""
    if not isinstance(data, dict):
        raise UsageError(f"{source}: '{key}' must be a JSON object")
    return schema.checked(
        data,
        types,
        says="{source}: {what} '{name}' must be {a_type}",
        unknown="{source}: unknown {what} '{name}'",
        source=source,
        what=what,
    )


def parse_upscale(message: dict, source: str = "the request") -> tuple[Job, object]:
    """The Job (task "upscale") and RunOptions of an upscale request in the command's own terms
    ({"upscale": {...}}: the Job fields an upscale is given, and max_pixels, its output's limit), checked
    by the code every run request goes through (parse_request); paths must be absolute."""
    from diffcli.flags import option_types
    from diffcli.upscale.rules import FIXED, NOT_TAKEN

    settled_only = {"task", "width", "height", *NOT_TAKEN, *FIXED}  # what the engine decides, or refuses
    types = {name: kind for name, kind in wire_types(Job).items() if name not in settled_only}
    types["max_pixels"] = option_types()["max_pixels"]
    fields = _typed_values(message.get("upscale"), types, "upscale", "upscale field", source)
    if fields.get("image") is None:
        raise UsageError(f"{source}: image is missing")
    options = message.get("opts", {})
    if "max_pixels" in fields and isinstance(options, dict):
        options = {**options, "max_pixels": fields.pop("max_pixels")}
    return parse_request({"job": {"task": "upscale", **fields}, "opts": options}, source)


def parse_request(message: dict, source: str = "the request") -> tuple[Job, object]:
    """The Job and RunOptions of a run request, every field type-checked; relative paths are refused
    (a server has no working directory of the client's). Ranges and combinations are checked later
    by the engine's settle, as for any command."""
    from diffcli.flags import build_options, option_types

    data, options = message.get("job"), message.get("opts", {})
    if not isinstance(data, dict):
        raise UsageError(f"{source}: 'job' must be a JSON object")
    unknown = sorted(set(data) - _JOB_FIELDS)
    if unknown:
        raise UsageError(f"{source}: unknown job field(s) {', '.join(unknown)}")
    job = Job.from_dict(data, source=source)
    values = _typed_values(options, option_types(), "opts", "option", source)  # --offload's choices too
    check_max_pixels(values.get("max_pixels"))
    for name, value in (("--out", values.get("out")), ("image", job.image), ("--mask", job.mask)):
        if value is not None and not os.path.isabs(value):
            raise UsageError(f"{source}: {name} must be an absolute path (got '{value}')")
    if values.get("out") is None:
        raise UsageError(f"{source}: the output path (--out) is missing")
    validate(job)  # what needs no model fails now, not after the jobs ahead (settle checks it all again)
    return job, build_options(values)


_IDS = itertools.count(1)


@dataclass
class Task:
    """One job waiting for, or in, the worker. REPORTER gets its progress, RESULTS its stdout lines."""

    job: Job
    opts: object  # RunOptions, without results
    reporter: object
    results: object  # callable(line)
    settled: bool = False  # the client already ran settle (and showed its warnings)
    door: str = "socket"
    id: int = field(default_factory=lambda: next(_IDS))
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    stop_reason: str | None = None  # "stopped": the server, not the client, ended it
    outcome: dict | None = None  # {"type": "end", "paths": [...]} or an error message (protocol.error_message)
    prepared: object = None
    progress: dict = field(default_factory=dict)  # filled by a Forwarder reporter: images, steps, image, step
    umask: int | None = None  # the client's, so its files get the permissions a local run gives them

    def finish(self, outcome: dict) -> None:
        self.outcome = outcome
        self.done.set()


class Stopping(Exception):
    """The server takes no more jobs."""


class Worker:
    """A queue of Tasks and the one thread that runs them."""

    def __init__(
        self, keep: int = 2, log=lambda line: None, max_bytes: int | None = None, compile: bool = False
    ) -> None:
        from diffcli.serve.models import Recent

        self.recent = Recent(keep, max_bytes)
        self.compile = compile  # `diffcli serve --compile`: every model it loads has its denoiser compiled
        self.log = log
        self.queue: deque[Task] = deque()
        self.current: Task | None = None
        self.cond = threading.Condition()
        self.stopping = False
        self.jobs_done = 0
        self.jobs_failed = 0
        self.last_active = time.monotonic()
        self.thread = threading.Thread(target=self._loop, name="diffcli-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def submit(self, task: Task) -> int:
        """Queue TASK; returns how many jobs are ahead of it (0: it runs now)."""
        with self.cond:
            if self.stopping:
                raise Stopping()
            ahead = len(self.queue) + (self.current is not None)
            if self.compile:  # the server's choice, whatever the request says (run.load_options: not upscale)
                task.opts = replace(task.opts, load=replace(task.opts.load, compile=True))
            self.queue.append(task)
            self.cond.notify_all()
            return ahead

    def cancel(self, task: Task, reason: str | None = None) -> None:
        """Stop TASK: taken off the queue if it has not started, else interrupted at its next step."""
        with self.cond:
            task.stop_reason = task.stop_reason or reason
            task.cancelled.set()
            if task in self.queue:
                self.queue.remove(task)
                self._finish_cancelled(task)
            self.cond.notify_all()

    def busy(self) -> bool:
        with self.cond:
            return self.current is not None or bool(self.queue)

    def counts(self) -> dict:
        with self.cond:
            current = self.current
            return {
                "queued": len(self.queue),
                "current": None if current is None else _describe(current),
                "jobs_done": self.jobs_done,
                "jobs_failed": self.jobs_failed,
            }

    def stop(self, cancel: bool) -> None:
        """Take no more jobs; with CANCEL, also end the queued and running ones."""
        with self.cond:
            self.stopping = True
            tasks = [*self.queue, *([self.current] if self.current else [])] if cancel else []
        for task in tasks:
            self.cancel(task, reason="stopped")
        with self.cond:
            self.cond.notify_all()

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until no job is queued or running; False if TIMEOUT passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while self.current is not None or self.queue:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self.cond.wait(remaining if remaining is not None else 1.0)
        return True

    def _loop(self) -> None:
        # torch and diffusers import now, in this thread: diffusers' lazy module is not safe to import
        # from two threads at once
        _warm_up(self.log)
        while True:
            with self.cond:
                while not self.queue:
                    self.cond.wait()
                task = self.queue.popleft()
                self.current = task
            try:
                self._run(task)
            except BaseException as exc:  # noqa: BLE001 - the worker must outlive anything one job does
                task.finish(
                    {
                        "type": "error",
                        "kind": "RuntimeFailure",
                        "exit_code": 1,
                        "message": f"{type(exc).__name__}: {exc}",
                    }
                )
                self.log(f"job {task.id}: {type(exc).__name__}: {exc}")
            finally:
                with self.cond:
                    self.current = None
                    self.last_active = time.monotonic()
                    self.cond.notify_all()

    def _run(self, task: Task) -> None:
        from diffcli.errors import DiffcliError
        from diffcli.serve.protocol import error_message

        t0 = time.perf_counter()
        umask = os.umask(task.umask) if task.umask is not None else None  # (jobs run one at a time)
        try:
            if task.cancelled.is_set():
                raise Cancelled()
            paths = run_task(task)
        except KeyboardInterrupt:
            self.jobs_failed += 1
            self._finish_cancelled(task)
            self.log(f"job {task.id}: {'stopped' if task.stop_reason else 'cancelled by its client'}")
            return
        except DiffcliError as exc:
            self.jobs_failed += 1
            task.finish(error_message(exc))
            self.log(f"job {task.id}: error: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - the server must outlive a bug in one job
            self.jobs_failed += 1
            task.finish(error_message(exc))
            self.log(f"job {task.id}: {type(exc).__name__}: {exc}\n{traceback.format_exc().rstrip()}")
            return
        finally:
            if umask is not None:
                os.umask(umask)
            if task.prepared is not None:
                self.recent.used(task.prepared, task.opts.load)
        self.jobs_done += 1
        task.finish({"type": "end", "paths": [str(p) for p in paths]})
        self.log(
            f"job {task.id}: {_describe(task)['task']}, {len(paths)} image{'' if len(paths) == 1 else 's'} in "
            f"{time.perf_counter() - t0:.1f} s ({task.door})"
        )

    def _finish_cancelled(self, task: Task) -> None:
        if task.stop_reason == "stopped":
            task.finish(
                {
                    "type": "error",
                    "kind": "stopped",
                    "exit_code": 1,
                    "message": "the diffcli server was stopped before the job finished",
                }
            )
        else:
            task.finish({"type": "error", "kind": "interrupted", "exit_code": 130, "message": "interrupted"})


def run_task(task: Task) -> list:
    """Run TASK through the engine, exactly as a command would (settle, plan, execute)."""
    from diffcli import run as engine
    from diffcli.output import release_reservations
    from diffcli.progress import QuietReporter

    t0 = time.perf_counter()
    opts = replace(task.opts, results=task.results)
    try:
        # the client settled the job already and showed its warnings: settle again (this is the trust
        # boundary) without repeating them
        task.prepared = engine.settle(task.job, opts, QuietReporter() if task.settled else task.reporter)
        if task.cancelled.is_set():
            raise Cancelled()
        planned = engine.plan_outputs(task.prepared, opts)
        return engine.execute(planned, opts, task.reporter, t0)
    finally:
        release_reservations()


def _describe(task: Task) -> dict:
    job = task.job
    return {"id": task.id, "task": job.task, "images": job.num_images, "steps": job.steps, "door": task.door}


def _warm_up(log) -> None:
    """Import torch and diffusers before the first job asks for them (a server starts to be used)."""
    try:
        from diffcli.pipelines import prepare_libraries

        prepare_libraries()
    except Exception as exc:  # noqa: BLE001 - the first job reports a real problem properly
        log(f"warm-up failed: {type(exc).__name__}: {exc}")

"""Live progress of the HTTP API's jobs as Server-Sent Events (`GET /v1/events`, docs/events.md).

Every job the HTTP door runs reports through a Forwarder (serve/reporter.py); its calls are replayed here
on a Reporter, so each event is the one a command's `--json` writes for the same job (same names, fields
and order), with `t` counted from the request's arrival and the job's `job_id` added; a `saved` path is
the file's name in the output directory (no reply names a server path), warnings are cleared of paths as
every reply's are. A stream gets every job's events from the moment it opens, or one job's from that
job's start (what it missed is replayed) to its end. `preview` events are made only while a stream that
wants them watches the job (serve/reporter.py keeps their rate).

Watching owns nothing: a stream that closes cancels no job.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque

from diffcli.progress import Reporter
from diffcli.serve import api
from diffcli.serve.reporter import replay

MAX_STREAMS = 16  # event streams open at once (each holds one of the HTTP API's connections)
KEEP_JOBS = 64  # ended jobs whose events a stream opened late can still replay
MAX_JOB_EVENTS = 20_000  # events kept per job for such a replay (previews are never kept)
MAX_BACKLOG = 4096  # events waiting for a slow stream; beyond that it is closed


class Stream:
    """One open event stream: the events waiting to be written to it."""

    def __init__(self, job_id: int | None, previews: bool) -> None:
        self.job_id = job_id  # None: every job's
        self.previews = previews
        self.pending: deque[dict] = deque()
        self.over = False  # its job ended, the hub closed, or it fell too far behind

    def takes(self, job_id: int, event: str) -> bool:
        return self.job_id in (None, job_id) and (self.previews or event != "preview")


class EventHub:
    """The HTTP jobs' events, handed to the open streams (and kept a while for streams opened late)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.streams: list[Stream] = []
        self.jobs: OrderedDict[int, dict] = OrderedDict()  # job id -> {"events": [...], "ended": bool}
        self.closed = False

    def open(self, job_id: int | None, previews: bool = True) -> Stream:
        """A new stream of every job's events (JOB_ID None) or of one job's, from its start."""
        stream = Stream(job_id, previews)
        with self.cond:
            if self.closed:
                raise api.HttpError(503, "the server is stopping", "Stopping")
            if len(self.streams) >= MAX_STREAMS:
                raise api.HttpError(
                    503, f"too many event streams at once (at most {MAX_STREAMS}); try again later", "Busy"
                )
            if job_id is not None:
                log = self.jobs.get(job_id)
                if log is None:
                    raise api.HttpError(404, f"no job {job_id} of the HTTP API (or it ended long ago)", "NotFound")
                stream.pending.extend(log["events"])
                stream.over = log["ended"]
            self.streams.append(stream)
        return stream

    def close_stream(self, stream: Stream) -> None:
        with self.cond:
            if stream in self.streams:
                self.streams.remove(stream)

    def next(self, stream: Stream, timeout: float) -> list[dict] | None:
        """The events waiting for STREAM (after up to TIMEOUT seconds without any: []); None once it is over
        and everything was taken."""
        with self.cond:
            if not stream.pending and not (stream.over or self.closed):
                self.cond.wait(timeout)
            events = list(stream.pending)
            stream.pending.clear()
            if not events and (stream.over or self.closed):
                return None
            return events

    def begin(self, job_id: int) -> None:
        with self.cond:
            self.jobs[job_id] = {"events": [], "ended": False}
            ended = [key for key, log in self.jobs.items() if log["ended"]]
            for key in ended[: max(0, len(ended) - KEEP_JOBS)]:
                del self.jobs[key]

    def publish(self, job_id: int, record: dict) -> None:
        """Hand RECORD (an event of job JOB_ID) to the streams that take it; never waits for one."""
        with self.cond:
            log = self.jobs.get(job_id)
            if log is not None and record["event"] != "preview" and len(log["events"]) < MAX_JOB_EVENTS:
                log["events"].append(record)
            for stream in self.streams:
                if stream.over or not stream.takes(job_id, record["event"]):
                    continue
                if len(stream.pending) >= MAX_BACKLOG:
                    stream.over = True  # too slow: it is closed once it has taken what it has
                else:
                    stream.pending.append(record)
            self.cond.notify_all()

    def end(self, job_id: int) -> None:
        with self.cond:
            if job_id in self.jobs:
                self.jobs[job_id]["ended"] = True
            for stream in self.streams:
                if stream.job_id == job_id:
                    stream.over = True
            self.cond.notify_all()

    def wants_previews(self, job_id: int) -> bool:
        with self.cond:
            return any(stream.takes(job_id, "preview") and not stream.over for stream in self.streams)

    def close(self) -> None:
        """The server stops: every stream ends."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class JobEvents(Reporter):
    """The `--json` events of one HTTP job, made from its Forwarder's calls and published on HUB.

    SHOWN turns a written file's path into its name in the output directory, PUBLIC clears a message of
    server paths (api.public_message)."""

    def __init__(self, hub: EventHub, job_id: int, shown, public) -> None:
        super().__init__()
        self.hub, self.job_id, self.shown, self.public = hub, job_id, shown, public
        self.t0 = time.perf_counter()
        hub.begin(job_id)

    def forward(self, message: dict) -> bool:
        """A Forwarder's message (a reporter call), replayed as its event; True (the job goes on)."""
        if message.get("type") == "call":
            replay(self, message.get("name"), message.get("args"), self.shown)
        return True

    def emit(self, event: str, **data) -> None:
        if event in ("warning", "info") and isinstance(data.get("message"), str):
            data["message"] = self.public(data["message"])
        record = {"event": event, "t": round(time.perf_counter() - self.t0, 4), **data, "job_id": self.job_id}
        self.hub.publish(self.job_id, record)

    def end(self, outcome: dict | None) -> None:
        """The job is over: an `error` event unless it finished (OUTCOME: the worker's), then its streams end."""
        outcome = outcome or {"kind": "stopped", "message": "the server is stopping"}
        if outcome.get("type") != "end":
            self.emit("error", error=str(outcome.get("kind")), detail=self.public(str(outcome.get("message"))))
        self.hub.end(self.job_id)

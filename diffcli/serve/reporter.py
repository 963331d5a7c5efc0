"""Progress across the socket: the server's reporter sends each call, the client replays it on its own.

The client's reporter (terminal bar, JSON lines or quiet) is the one the command would have used
without a server, so stderr looks the same: only the clock of JSON events is the client's own.
"""

from __future__ import annotations

import threading
import time

from diffcli.progress import JsonReporter, Reporter

# reporter methods a server may call on the client's reporter, and the arguments each takes
CALLS = {
    "start": ("task", "total_images", "steps"),
    "phase": ("name", "data"),
    "begin_batch": ("first_image", "count", "steps"),
    "step": ("step", "steps"),
    "saved": ("path", "seed", "image"),
    "warn": ("message",),
    "done": ("data",),
    "emit": ("event", "data"),
}


PREVIEWS_PER_S = 4  # step previews of one job a second, at most (HTTP events)
PREVIEW_SHARE = 4  # and each preview at least this many times its own cost after the last
PREVIEW_MAX_SIDE = 256  # pixels: a larger preview is shrunk to this


def jpeg_data_url(image) -> str:
    """IMAGE (PIL) as a `data:image/jpeg;base64,...` URL, shrunk to PREVIEW_MAX_SIDE a side."""
    import base64
    import io

    image = image.convert("RGB")
    image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class Cancelled(KeyboardInterrupt):
    """The job's client went away or asked to stop: raised inside the engine where Ctrl-C would be,
    so the same clean-up runs (temp files, --save-partial)."""


class Forwarder(JsonReporter):
    """A reporter that hands every call to SEND (as a "call" message) and raises Cancelled at the next
    step or phase once CANCELLED is set.

    A JsonReporter subclass so that a download during the job reports through `emit` (see
    progress.download_progress), which is forwarded too.

    PREVIEWS (HTTP): says whether someone watches the job's previews; while it does, a `preview` event
    (a small JPEG data URL, see diffcli.preview) goes out at most PREVIEWS_PER_S times a second, and
    never more often than every PREVIEW_SHARE-fold of the time the last one took (on a slow device a
    preview costs the job at most about 1/(1 + PREVIEW_SHARE) of its time)."""

    def __init__(self, send, cancelled: threading.Event, progress: dict | None = None, previews=None) -> None:
        Reporter.__init__(self)
        self.send = send
        self.cancelled = cancelled
        self.progress = progress if progress is not None else {}  # where the job is, for /sdapi/v1/progress
        self.previews = previews
        self.next_preview = 0.0  # time.monotonic() before which no preview is made

    def _call(self, name: str, /, **args) -> None:
        if not self.send({"type": "call", "name": name, "args": args}):
            self.cancelled.set()  # nobody is listening any more

    def _check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled()

    def emit(self, event: str, **data) -> None:
        self._call("emit", event=event, data=data)

    def start(self, task: str, total_images: int, steps: int) -> None:
        self._check()
        self.total_images = total_images
        self.progress.update(images=total_images, steps=steps, image=1, count=1, step=0, t0=time.monotonic())
        self._call("start", task=task, total_images=total_images, steps=steps)

    def phase(self, name: str, **data) -> None:
        self._check()
        self._call("phase", name=name, data=data)

    def begin_batch(self, first_image: int, count: int, steps: int) -> None:
        self._check()
        self.progress.update(image=first_image, count=count, step=0, steps=steps)
        self._call("begin_batch", first_image=first_image, count=count, steps=steps)

    def step(self, step: int, steps: int) -> None:
        self.progress.update(step=step, steps=steps)
        self._call("step", step=step, steps=steps)
        self._check()

    def saved(self, path: str, seed: int, image: int) -> None:
        self._call("saved", path=path, seed=seed, image=image)

    def warn(self, message: str) -> None:
        self._call("warn", message=message)

    def done(self, **data) -> None:
        self._call("done", data=data)

    def wants_preview(self) -> bool:
        return self.previews is not None and time.monotonic() >= self.next_preview and bool(self.previews())

    def preview(self, image, step: int, steps: int, cost_s: float) -> None:
        self.next_preview = time.monotonic() + max(1.0 / PREVIEWS_PER_S, PREVIEW_SHARE * cost_s)
        data = {"image": self.progress.get("image", 1), "step": step, "steps": steps, "url": jpeg_data_url(image)}
        self._call("emit", event="preview", data=data)


def replay(reporter, name: str, args: dict, shown=lambda path: path) -> None:
    """Make on REPORTER the call a server's Forwarder made; SHOWN turns a server path into the form
    the user wrote (relative where the --out was). Unknown or malformed calls are ignored."""
    if name not in CALLS or not isinstance(args, dict) or set(args) != set(CALLS[name]):
        return
    data = args.get("data") if isinstance(args.get("data"), dict) else {}
    if name == "phase":
        reporter.phase(args["name"], **data)
    elif name == "done":
        reporter.done(**data)
    elif name == "emit":
        reporter.emit(str(args["event"]), **data)
    elif name == "saved":
        reporter.saved(shown(args["path"]), args["seed"], args["image"])
    else:
        getattr(reporter, name)(*(args[k] for k in CALLS[name]))

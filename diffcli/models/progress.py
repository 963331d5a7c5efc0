"""Download progress: a rich bar on stderr, JSON-lines events, events for a caller, or nothing.

`Feedback` is what every download takes; `progress` (as `resolve` and the pulls accept it) is one of
  "auto"   a rich bar (bytes, speed, ETA) on stderr, and notes as plain lines;
  "quiet"  nothing (-q);
  "json"   JSON lines on stderr (--json): {"event": "download", "t", "model", "bytes", "total"}
           and {"event": "warning", "t", "message"}; stdout is never written;
  a callable `emit(event, **data)`, e.g. a generation command's JSON reporter's `emit`, which adds `t`.
huggingface_hub's own tqdm bars are never drawn: its byte counts are fed to ours (tqdm_class_for).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from contextlib import contextmanager

MODES = ("auto", "quiet", "json")
EVENT_INTERVAL = 0.5  # seconds between two `download` events of one download (the last one always comes)


class _Null:
    def advance(self, n: int) -> None:
        pass

    def add_total(self, n: int) -> None:
        pass


class _Bar:
    def __init__(self, progress, task):
        self._progress = progress
        self._task = task
        self._lock = threading.Lock()

    def advance(self, n: int) -> None:
        with self._lock:
            self._progress.update(self._task, advance=n)

    def add_total(self, n: int) -> None:
        with self._lock:
            task = self._progress.tasks[self._task] if isinstance(self._task, int) else None
            total = (task.total if task is not None else 0) or 0
            self._progress.update(self._task, total=total + n)


class _Events:
    """`download` events: one at the start, at most one per EVENT_INTERVAL, and one at the end."""

    def __init__(self, emit, model: str, total: int | None):
        self._emit = emit
        self._model = model
        self._total = total
        self._done = 0
        self._last = 0.0
        self._lock = threading.Lock()

    def _send(self) -> None:
        self._last = time.monotonic()
        self._emit("download", model=self._model, bytes=self._done, total=self._total)

    def advance(self, n: int) -> None:
        with self._lock:
            self._done += int(n or 0)
            if time.monotonic() - self._last >= EVENT_INTERVAL:
                self._send()

    def add_total(self, n: int) -> None:
        with self._lock:
            self._total = (self._total or 0) + n

    def finish(self) -> None:
        with self._lock:
            self._send()


class Feedback:
    """Where one command's download progress and notes go (see the module docstring for PROGRESS)."""

    def __init__(self, progress="auto"):
        if callable(progress):
            self.mode, self._emit = "events", progress
        elif progress in MODES:
            self.mode, self._emit = progress, self._json_line
        else:
            raise ValueError(f"progress must be one of {', '.join(MODES)} or a callable, not {progress!r}")
        self._t0 = time.perf_counter()

    @classmethod
    def of(cls, progress=None, quiet: bool = False) -> "Feedback":
        """PROGRESS as a Feedback; `quiet=True` (the older flag) means "quiet" when PROGRESS is not given."""
        if isinstance(progress, Feedback):
            return progress
        if progress is None or (quiet and progress == "auto"):
            progress = "quiet" if quiet else "auto"
        return cls(progress)

    @property
    def quiet(self) -> bool:
        return self.mode == "quiet"

    def _json_line(self, event: str, **data) -> None:
        record = {"event": event, "t": round(time.perf_counter() - self._t0, 4), **data}
        sys.stderr.write(json.dumps(record) + "\n")
        sys.stderr.flush()

    def note(self, message: str) -> None:
        """Something the user should know now (e.g. waiting for another process): a plain line or an event."""
        if self.mode == "auto":
            sys.stderr.write(f"{message}\n")
            sys.stderr.flush()
        elif self.mode != "quiet":
            self._emit("warning", message=message)

    def warning(self, message: str) -> None:
        """A warning: shown in every mode but JSON/events ones as `diffcli: warning: ...` on stderr."""
        if self.mode in ("auto", "quiet"):
            sys.stderr.write(f"diffcli: warning: {message}\n")
            sys.stderr.flush()
        else:
            self._emit("warning", message=message)

    def waiting(self, message: str):
        """For registry.file_lock(waiting=...): None when quiet, else a callable that notes MESSAGE."""
        return None if self.quiet else (lambda: self.note(message))

    @contextmanager
    def bar(self, description: str, total: int | None, *, model: str | None = None):
        """Yield an object with advance(n)/add_total(n) for one download."""
        if self.mode == "quiet":
            yield _Null()
            return
        if self.mode != "auto":
            events = _Events(self._emit, model or description, total)
            events.finish()  # the start
            yield events
            events.finish()
            return
        with download_bar(description, total) as bar:
            yield bar

    def tqdm_class(self, bar=None):
        """A tqdm look-alike for huggingface_hub that feeds `bar` (or nothing): its own bars never show."""
        return tqdm_class_for(bar if bar is not None else _Null())


@contextmanager
def download_bar(description: str, total: int | None, *, quiet: bool = False):
    """Yield an object with advance(n)/add_total(n); draws nothing when quiet."""
    if quiet:
        yield _Null()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(file=sys.stderr)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield _Bar(progress, task)


def tqdm_class_for(bar):
    """A tqdm look-alike for huggingface_hub's `tqdm_class`: forwards byte counts to `bar`."""

    class _Tqdm:
        def __init__(self, *args, **kwargs):
            self.n = kwargs.get("initial", 0) or 0
            self.total = kwargs.get("total")
            if self.n:
                bar.advance(self.n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n=1):
            n = int(n or 0)
            self.n += n
            bar.advance(n)

        def update_transfer(self, n=1):
            pass

        def set_postfix_str(self, *a, **k):
            pass

        def set_transfer_postfix_str(self, *a, **k):
            pass

        def set_description(self, *a, **k):
            pass

        def refresh(self, *a, **k):
            pass

        def close(self):
            pass

        @classmethod
        def get_lock(cls):
            return threading.RLock()

        @classmethod
        def set_lock(cls, lock):
            pass

    return _Tqdm

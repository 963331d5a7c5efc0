"""Download progress on stderr: one rich bar (bytes, speed, ETA) fed by huggingface_hub's tqdm hooks."""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager


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

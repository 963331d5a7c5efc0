"""Progress reporting behind one interface: a rich bar on stderr, JSON-lines events, or silence.

Event schema (one JSON object per line on stderr) is documented in docs/events.md.
"""

from __future__ import annotations

import json
import sys
import time


class Reporter:
    """Base reporter: records nothing. Subclasses override `emit`."""

    def __init__(self) -> None:
        self.total_images = 0

    def emit(self, event: str, **data) -> None:  # pragma: no cover - overridden
        pass

    def start(self, task: str, total_images: int, steps: int) -> None:
        self.total_images = total_images
        self.emit("start", task=task, images=total_images, steps=steps)

    def phase(self, name: str, **data) -> None:
        self.emit("phase", phase=name, **data)

    def begin_batch(self, first_image: int, count: int, steps: int) -> None:
        self.emit("batch", image=first_image, count=count, steps=steps)

    def step(self, step: int, steps: int) -> None:
        self.emit("step", step=step, steps=steps)

    def saved(self, path: str, seed: int, image: int) -> None:
        self.emit("saved", path=path, seed=seed, image=image)

    def warn(self, message: str) -> None:
        self.emit("warning", message=message)

    def done(self, **data) -> None:
        self.emit("done", **data)

    def close(self) -> None:
        pass


class QuietReporter(Reporter):
    """--quiet: nothing but errors."""


class JsonReporter(Reporter):
    """JSON-lines events on stderr, for scripts and when stderr is not a terminal."""

    def __init__(self, stream=None) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()

    def emit(self, event: str, **data) -> None:
        record = {"event": event, "t": round(time.perf_counter() - self.t0, 4), **data}
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


class RichReporter(Reporter):
    """A rich progress bar on stderr: phase, image k/N, step i/N, it/s and ETA."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task_id = None
        self.images_label = ""
        self.last = None

    def _describe(self, phase: str) -> str:
        return f"{phase} {self.images_label}".strip()

    def phase(self, name: str, **data) -> None:
        if self.task_id is None:
            self.progress.start()
            self.task_id = self.progress.add_task(self._describe(name), total=None, rate="")
        else:
            self.progress.update(self.task_id, description=self._describe(name))

    def begin_batch(self, first_image: int, count: int, steps: int) -> None:
        last = first_image + count - 1
        span = f"{first_image}" if count == 1 else f"{first_image}-{last}"
        self.images_label = f"image {span}/{self.total_images}"
        if self.task_id is None:
            self.phase("denoise")
        self.progress.reset(self.task_id, total=steps, description=self._describe("denoise"), rate="")
        self.last = time.perf_counter()

    def step(self, step: int, steps: int) -> None:
        now = time.perf_counter()
        rate = f"{1.0 / (now - self.last):.1f} it/s" if self.last and now > self.last else ""
        self.last = now
        self.progress.update(self.task_id, completed=step, total=steps, rate=rate, description=self._describe("denoise"))

    def saved(self, path: str, seed: int, image: int) -> None:
        self.console.print(f"saved {path} (seed {seed})", highlight=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {message}", highlight=False)

    def close(self) -> None:
        if self.task_id is not None:
            self.progress.stop()


def make_reporter(json_mode: bool, quiet: bool) -> Reporter:
    if quiet:
        return QuietReporter()
    if json_mode or not sys.stderr.isatty():
        return JsonReporter()
    return RichReporter()

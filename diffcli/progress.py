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

    def info(self, message: str) -> None:
        """Something the command decided by itself that the user may want to know (not a problem)."""
        self.emit("info", message=message)

    def done(self, **data) -> None:
        self.emit("done", **data)

    def wants_preview(self) -> bool:
        """Whether the engine should make a step preview now (diffcli.preview); a reporter that shows
        previews says when, keeping their rate. None by default: the engine then makes none."""
        return False

    def preview(self, image, step: int, steps: int, cost_s: float) -> None:
        """A preview (PIL image) of the running batch's first image after STEP of STEPS; COST_S: the
        seconds it took to make (a reporter may space the next ones by it)."""

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
    """A rich progress bar on stderr: phase, image k/N, step i/N, it/s and ETA; one summary line at the end.

    The bar is transient: what stays on the terminal is the warnings, the written paths (once) and
    the summary, e.g. "3 images in 4.2 s (model load 1.1 s) → outputs/".
    """

    # terminal labels of the JSON phase names (docs/events.md keeps the names)
    LABELS = {"encode": "text encode"}

    def __init__(self, console=None, stdout_is_terminal: bool | None = None) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = console if console is not None else Console(stderr=True)
        if stdout_is_terminal is None:
            stdout_is_terminal = _isatty(sys.stdout)
        # stdout on the terminal too: its writes (the result paths) go above the bar; stdout redirected:
        # they must reach the file, so rich must not take sys.stdout over
        self.stdout_is_terminal = stdout_is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            redirect_stdout=stdout_is_terminal,
            redirect_stderr=False,
        )
        self.task_id = None
        self.images_label = ""
        self.current = ""  # the phase label the bar shows
        self.last = None
        self.paths: list[str] = []
        self.batch: dict | None = None  # diffcli batch: jobs, done, t0

    def emit(self, event: str, **data) -> None:
        """A batch's own events: an overall "job k/N, ETA" prefix, and one summary at the end."""
        if event == "batch_start":
            self.batch = {"jobs": data.get("jobs", 0), "ran": 0, "t0": time.perf_counter()}
        elif event == "job" and self.batch is not None:
            self.batch["job"] = data.get("job", 0)
        elif event == "batch_done" and self.batch is not None:
            self.close()
            self.console.print(batch_summary(self.paths, **data), highlight=False, markup=False)

    def _describe(self, label: str) -> str:
        prefix = ""
        if self.batch is not None and self.batch.get("job"):
            done, elapsed = self.batch["ran"], time.perf_counter() - self.batch["t0"]
            left = self.batch["jobs"] - self.batch["job"] + 1
            eta = f", ~{elapsed / done * left:.0f} s left" if done else ""
            prefix = f"job {self.batch['job']}/{self.batch['jobs']}{eta} · "
        return f"{prefix}{label} {self.images_label}".strip()

    def _label(self, name: str, data: dict) -> str:
        label = self.LABELS.get(name, name)
        if "tile" in data and "tiles" in data:
            label += f" tile {data['tile']}/{data['tiles']}"
        return label

    def phase(self, name: str, **data) -> None:
        self.current = self._label(name, data)
        if self.task_id is None:
            self.progress.start()
            self.task_id = self.progress.add_task(self._describe(self.current), total=None, rate="")
        else:
            self.progress.update(self.task_id, description=self._describe(self.current))

    def begin_batch(self, first_image: int, count: int, steps: int) -> None:
        last = first_image + count - 1
        span = f"{first_image}" if count == 1 else f"{first_image}-{last}"
        self.images_label = f"image {span}/{self.total_images}" if self.total_images > 1 else ""
        self.current = "denoise"
        if self.task_id is None:
            self.phase("denoise")
        self.progress.reset(self.task_id, total=steps, description=self._describe("denoise"), rate="")
        self.last = time.perf_counter()

    def step(self, step: int, steps: int) -> None:
        now = time.perf_counter()
        rate = f"{1.0 / (now - self.last):.1f} it/s" if self.last and now > self.last else ""
        self.last = now
        if not self.current.startswith("denoise"):  # the first step ends the text encoding
            self.current = "denoise"
        self.progress.update(
            self.task_id, completed=step, total=steps, rate=rate, description=self._describe(self.current)
        )

    def saved(self, path: str, seed: int, image: int) -> None:
        self.paths.append(path)
        if not self.stdout_is_terminal:  # else the path on stdout is already on this terminal
            self.console.print(f"saved {path} (seed {seed})", highlight=False, markup=False)

    def warn(self, message: str) -> None:
        from rich.text import Text

        self.console.print(Text.assemble(("warning:", "yellow"), " ", message))

    def info(self, message: str) -> None:
        from rich.text import Text

        self.console.print(Text.assemble(("info:", "cyan"), " ", message))

    def done(self, **data) -> None:
        if self.batch is not None:  # one job of a batch: the batch's summary comes at its end
            self.batch["ran"] += 1
            return
        self.close()
        self.console.print(summary_line(self.paths, **data), highlight=False, markup=False)

    def close(self) -> None:
        if self.task_id is not None:
            self.progress.stop()
            self.task_id = None


def summary_line(
    paths: list[str], images: int | None = None, total_s: float | None = None, load_s: float | None = None, **_ignored
) -> str:
    """ "3 images in 4.2 s (model load 1.1 s) → outputs/" for the PATHS written."""
    n = len(paths) if images is None else images
    text = f"{n} image{'' if n == 1 else 's'}"
    if total_s is not None:
        text += f" in {total_s:.1f} s"
        if load_s:
            text += f" (model load {load_s:.1f} s)"
    if paths:
        text += f" → {_destination(paths)}"
    return text


def batch_summary(
    paths: list[str],
    jobs_done: int = 0,
    jobs_skipped: int = 0,
    jobs_failed: int = 0,
    total_s: float | None = None,
    **_ignored,
) -> str:
    """ "12 jobs done, 3 skipped (finished before), 0 failed: 24 images in 30.1 s (0.80 images/s) → out/"."""
    text = f"{jobs_done} job{'' if jobs_done == 1 else 's'} done, {jobs_skipped} skipped (finished before)"
    text += f", {jobs_failed} failed: {len(paths)} image{'' if len(paths) == 1 else 's'}"
    if total_s is not None:
        text += f" in {total_s:.1f} s"
        if paths and total_s > 0:
            text += f" ({len(paths) / total_s:.2f} images/s)"
    if paths:
        text += f" → {_destination(paths)}"
    return text


def _destination(paths: list[str]) -> str:
    """The folder the files share, with a trailing separator (the paths themselves are on stdout)."""
    import os

    parents = [os.path.dirname(p) or "." for p in paths]
    try:
        common = parents[0] if len(set(parents)) == 1 else os.path.commonpath(parents)
    except ValueError:  # absolute and relative, or other drives
        return f"{len(set(parents))} folders"
    return common if common.endswith(os.sep) else common + os.sep


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def make_reporter(json_mode: bool, quiet: bool, json=JsonReporter, terminal=RichReporter) -> Reporter:
    """The reporter --json and --quiet ask for, the one place every command (and each process of a
    launched batch, and distill's training events) decides it: nothing but errors with --quiet, JSON-lines
    events with --json or when stderr is no terminal, else a progress bar. JSON and TERMINAL: the
    reporter classes of those two (a launched batch's rank tags its events)."""
    if quiet:
        return QuietReporter()
    if json_mode or not sys.stderr.isatty():
        return json()
    return terminal()


def download_progress(reporter) -> object:
    """How a model download started by a command shows itself, matching REPORTER: JSON `download`
    events on the reporter's clock, nothing under --quiet, else the terminal bar."""
    if isinstance(reporter, JsonReporter):
        return reporter.emit
    if isinstance(reporter, QuietReporter):
        return "quiet"
    return "auto"

"""Training progress: a rich bar (loss, steps/s, ETA) on a terminal, JSON-lines events with --json.

Events (one JSON object per line on stderr, see docs/distill.md): start, phase, data, encode, train,
checkpoint, saved, report, warning, done.
"""

from __future__ import annotations

import time

from diffcli.progress import Reporter


class TrainEvents:
    """Wraps a diffcli Reporter; adds training-specific events and a training bar."""

    def __init__(self, reporter: Reporter, rich: bool = False):
        self.reporter = reporter
        self.rich = rich
        self.progress = None
        self.counter = None  # the bar of count()
        self.task = None
        self.t0 = self.t_step = None
        self.step0 = 0

    # pass-through
    def emit(self, event: str, **data) -> None:
        if not self.rich:
            self.reporter.emit(event, **data)

    def phase(self, name: str, **data) -> None:
        if self.rich:
            self._print(f"[bold]{name}[/] " + " ".join(f"{k}={v}" for k, v in data.items()))
        else:
            self.reporter.emit("phase", phase=name, **data)

    def warn(self, message: str) -> None:
        self.reporter.warn(message)

    def info(self, message: str) -> None:
        if self.rich:
            self._print(message)
        else:
            self.reporter.emit("info", message=message)

    def count(self, event: str, done: int, total: int, label: str) -> None:
        """Progress through a preparation phase (the teacher drawing images, the VAE encoding them):
        a transient bar labelled LABEL on a terminal, else an EVENT with `done` and `total`."""
        if not self.rich:
            self.reporter.emit(event, done=done, total=total)
            return
        if self.counter is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.counter = Progress(
                TextColumn(f"[bold]{label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=getattr(self.reporter, "console", None),
                transient=True,
            )
            self.counter.start()
            self.counter.add_task(label, total=total)
        self.counter.update(self.counter.task_ids[0], completed=done, total=total)
        if done >= total:
            self._stop_counter()

    def _stop_counter(self) -> None:
        if self.counter is not None:
            self.counter.stop()
            self.counter = None

    def _print(self, text: str) -> None:
        console = self.progress.console if self.progress else getattr(self.reporter, "console", None)
        if console is not None:
            console.print(text, highlight=False)

    # training
    def start(self, **data) -> None:
        self.step0 = data.get("step", 0)
        total = data.get("steps")
        self.t0 = time.perf_counter()
        if self.rich:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]distill"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=getattr(self.reporter, "console", None),
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task("distill", total=total, completed=self.step0, loss="-", rate="")
        else:
            self.reporter.emit("start", task="distill", **data)

    def rate(self, step: int) -> float:
        dt = time.perf_counter() - self.t0
        return (step - self.step0) / dt if dt > 0 else 0.0

    def train(self, step: int, steps: int, loss: float, lr: float, emit: bool) -> None:
        rate = self.rate(step)
        eta = (steps - step) / rate if rate > 0 else None
        if self.rich:
            self.progress.update(self.task, completed=step, loss=f"{loss:.4f}", rate=f"{rate:.2f} steps/s")
        elif emit:
            self.reporter.emit(
                "train",
                step=step,
                steps=steps,
                loss=round(loss, 6),
                lr=lr,
                steps_per_s=round(rate, 3),
                eta_s=round(eta, 1) if eta is not None else None,
            )

    def checkpoint(self, step: int, path: str) -> None:
        if self.rich:
            self._print(f"checkpoint {path} (step {step})")
        else:
            self.reporter.emit("checkpoint", step=step, path=path)

    def close(self) -> None:
        self._stop_counter()
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def saved(self, path: str, kind: str) -> None:
        if self.rich:
            self._print(f"saved {kind} {path}")
        else:
            self.reporter.emit("saved", path=path, kind=kind)

    def done(self, **data) -> None:
        self.close()
        self.reporter.emit("done", **data) if not self.rich else self._print(
            "done " + " ".join(f"{k}={v}" for k, v in data.items())
        )


def make_events(json_mode: bool, quiet: bool, main_process: bool = True) -> TrainEvents:
    """Training events as --json and --quiet ask for them (progress.make_reporter); the other processes of
    a multi-process run say nothing."""
    from diffcli.progress import RichReporter, make_reporter

    reporter = make_reporter(json_mode, quiet or not main_process)
    return TrainEvents(reporter, rich=isinstance(reporter, RichReporter))

"""`diffcli distill` end to end: checks, train (or resume), export, report. Also `--report DIR` alone."""

from __future__ import annotations

import sys
from pathlib import Path

from diffcli.distill.config import DistillConfig


def config_from_flags(given: dict) -> DistillConfig:
    """The run's settings: the flags given; with --resume, the unspecified ones come from the run itself."""
    from diffcli.distill.preflight import read_run

    given = {k: v for k, v in given.items() if v is not None}
    probe = DistillConfig(**given)
    if given.get("resume") and probe.out:
        previous = read_run(probe.ckpt_path)
        if previous is not None:
            base = previous.to_dict()
            base.update(given)
            base["resume"] = True
            return DistillConfig.from_dict(base)
    return probe


def distill(config: DistillConfig, json_mode: bool = False, quiet: bool = False) -> Path:
    from diffcli.distill.preflight import plan as make_plan

    plan = make_plan(config)  # every input check, before torch is imported
    from diffcli.distill.events import make_events
    from diffcli.training.distill.trainer import make_accelerator, train  # the one door into training

    acc = make_accelerator(plan.config)
    if plan.config.threads:
        import torch

        torch.set_num_threads(plan.config.threads)
    events = make_events(json_mode, quiet, acc.is_main_process)
    try:
        summary = train(plan, events, acc)
        if acc.is_main_process and plan.config.report:
            from diffcli.distill.report import run_report

            rep = run_report(
                plan.out,
                n=plan.config.report_n,
                events=events,
                device=str(acc.device),
                prompts_file=plan.config.report_prompts,
            )
            events.saved(str(plan.out / "report.md"), "report")
            summary["report"] = rep.get("bars")
        if acc.is_main_process:
            events.done(**{k: v for k, v in summary.items() if k != "report"})
            sys.stdout.write(str(plan.out) + "\n")
            sys.stdout.flush()
    finally:
        events.close()
    return plan.out


def report_only(
    student_dir: str,
    n: int | None,
    prompts_file: str | None,
    device: str | None,
    json_mode: bool,
    quiet: bool,
    threads: int | None = None,
) -> dict:
    from diffcli.distill.events import make_events
    from diffcli.distill.report import run_report
    from diffcli.errors import UsageError

    path = Path(student_dir).expanduser()
    if not path.is_dir():
        raise UsageError(f"--report {path}: no such directory")
    if n is not None and n < 3:
        raise UsageError("--report-n must be at least 3")
    if threads:
        import torch

        torch.set_num_threads(threads)
    events = make_events(json_mode, quiet)
    try:
        rep = run_report(
            path,
            n=n,
            events=events,
            prompts_file=prompts_file,
            device="cuda" if device and device.startswith("cuda") else "cpu",
        )
    finally:
        events.close()
    sys.stdout.write(str(path / "report.md") + "\n")
    if json_mode:
        import json

        sys.stdout.write(json.dumps(rep) + "\n")
    sys.stdout.flush()
    return rep

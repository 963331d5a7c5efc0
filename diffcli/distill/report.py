"""The quality report: the teacher at its default settings vs the student at 1, 2, 4 and 8 steps.

Same held-out prompts and seeds for every row. Figures per row: seconds per image (batch 1, after a
warm-up), and, when the teacher is the bundled model, prompt adherence, per-attribute accuracy and
the Fréchet distance to true renders (bundled evaluator). For other teachers: PSNR of each image
against the teacher's image for the same prompt and seed (how closely the student follows it).
Written next to the student as report.json, report.md and report.png (a grid of samples).
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from diffcli.distill.preflight import STUDENT_KEY
from diffcli.errors import UsageError

STUDENT_STEPS = (1, 2, 4, 8)
# Bars from the issue, checked for the 4-step student (bundled teacher).
BARS = {"adherence_ratio_min": 0.95, "fd_ratio_max": 1.25, "time_ratio_max": 0.2}
HELDOUT_SEED = 2024  # caption-grammar seed no training uses (bench/bundled_quality.py uses it too)


def heldout_prompts(n: int, seed: int = HELDOUT_SEED) -> list[str]:
    from diffcli.bundled import scenes

    rng, out = random.Random(seed), []
    while len(out) < n:
        p = scenes.caption(scenes.sample_scene(rng), rng, drop_prob=0.25)
        if scenes.parse_prompt(p)[0]:
            out.append(p)
    return out


def _prompts(record: dict, n: int, prompts_file: str | None) -> tuple[list[str], str]:
    if prompts_file:
        from diffcli.distill.preflight import check_prompts

        ps = check_prompts(Path(prompts_file))
        return [ps[i % len(ps)] for i in range(n)], f"--report-prompts {prompts_file}"
    if record.get("bundled_teacher"):
        return heldout_prompts(n), f"held-out caption-grammar prompts (seed {HELDOUT_SEED})"
    defaults = [
        "a photo of a castle at dusk",
        "a red door",
        "a watercolor painting of a house",
        "an oil painting of a tree",
        "a house at dusk",
        "a castle",
    ]
    return [defaults[i % len(defaults)] for i in range(n)], "built-in generic prompts"


def _generate(pipe, prompts, steps, cfg, size, cutoff=0.0, batch=16, seed0=0, shift=None):
    from diffcli import guidance
    from diffcli.timesteps import schedule_kwargs

    images = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        gens = [torch.Generator().manual_seed(seed0 + i + j) for j in range(len(chunk))]
        images += pipe(
            chunk,
            width=size,
            height=size,
            generator=gens,
            **schedule_kwargs(pipe, steps, shift),
            **guidance.pipeline_kwargs(pipe, cfg, cutoff, steps, shift=shift),
        ).images
    return images


def _time_rows(rows, prompts, size, n=4) -> list[float]:
    """Seconds per image (batch 1) of each row: one warm-up each, then n rounds that take the rows in
    turn, and the median per row; a shared, busy CPU then slows every row alike."""
    for _, pipe, steps, cfg, _, cutoff, shift in rows:
        _generate(pipe, prompts[:1], steps, cfg, size, cutoff, batch=1, shift=shift)
    times = [[] for _ in rows]
    for i in range(n):
        for k, (_, pipe, steps, cfg, _, cutoff, shift) in enumerate(rows):
            t = time.perf_counter()
            _generate(pipe, [prompts[i % len(prompts)]], steps, cfg, size, cutoff, batch=1, seed0=i, shift=shift)
            times[k].append(time.perf_counter() - t)
    return [float(np.median(t)) for t in times]


def _psnr(a, b) -> float:
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mse = ((x - y) ** 2).mean()
    return float("inf") if mse == 0 else float(10 * math.log10(255.0**2 / mse))


def _load_evaluator(events):
    try:
        from diffcli.bundled.evaluator import load_evaluator

        return load_evaluator()
    except Exception as exc:  # noqa: BLE001 - the report still has the timing figures
        events.warn(f"bundled evaluator not available ({type(exc).__name__}); quality figures skipped")
        return None


def load_sampling_teacher(path, scheduler: str, device: str = "cpu"):
    """The teacher pipeline (float32) as it samples at its defaults: SCHEDULER built from its own config."""
    from diffusers import DiffusionPipeline

    from diffcli.distill.components import from_pretrained
    from diffcli.pipelines import set_scheduler
    from diffcli.schedulers import ORIGINAL_SCHEDULER

    teacher = from_pretrained(DiffusionPipeline, path)
    teacher.set_progress_bar_config(disable=True)
    setattr(teacher, ORIGINAL_SCHEDULER, dict(teacher.scheduler.config))
    set_scheduler(teacher, scheduler)
    return teacher.to(device)


def run_report(
    student_dir,
    n: int | None = None,
    events=None,
    prompts_file: str | None = None,
    device: str = "cpu",
    timing_n: int = 8,
) -> dict:
    """Write report.json / report.md / report.png into STUDENT_DIR; returns the report. N prompts
    (None: the default for the student's teacher, diffcli.distill.config.default_report_n)."""
    from diffcli.distill.events import make_events
    from diffcli.distill.student import load_student
    from diffcli.models import resolve
    from diffcli.pipelines import prepare_libraries

    events = events or make_events(False, True)
    student_dir = Path(student_dir)
    own, record = _student_record(student_dir)
    if n is None:
        from diffcli.distill.config import default_report_n

        n = default_report_n(bool(record.get("bundled_teacher")))
    teacher_name = record["teacher_path"] if Path(record["teacher_path"]).is_dir() else record["teacher"]
    ref = resolve(teacher_name, offline=True)
    prepare_libraries()
    td = record.get("teacher_defaults") or {}
    size = int(own.get("width") or td.get("width") or 512)
    prompts, prompt_source = _prompts(record, n, prompts_file)
    events.phase("report", prompts=len(prompts), student=str(student_dir))

    teacher = load_sampling_teacher(ref.path, td.get("scheduler") or "ddim", device)
    student = load_student(student_dir, device)
    rows = _report_rows(td, own, teacher, student)

    evaluator = _load_evaluator(events) if record.get("bundled_teacher") else None
    results, samples = _score_rows(rows, prompts, size, evaluator, events)
    rounds = min(timing_n, len(prompts))
    events.phase("report", timing_rounds=rounds)
    for row, sec in zip(results, _time_rows(rows, prompts, size, rounds)):
        row["sec_per_image"] = round(sec, 4)
        events.emit("report_row", **{k: v for k, v in row.items() if k != "accuracy"})
    report = {
        "student": str(student_dir),
        "teacher": record["teacher"],
        "method": record["method"],
        "student_unet": record.get("student_unet") or "full",
        "student_vae": record.get("student_vae") or "teacher",
        "train_steps": record.get("steps"),
        "prompts": len(prompts),
        "prompt_source": prompt_source,
        "size": size,
        "device": device,
        "threads": torch.get_num_threads(),
        "rows": results,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    report["bars"] = _bars(results) if evaluator is not None else None
    (student_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (student_dir / "report.md").write_text(markdown(report))
    _grid(samples, size).save(student_dir / "report.png")
    return report


def _student_record(student_dir: Path) -> tuple[dict, dict]:
    """STUDENT_DIR's own diffcli.json and its distill record; a usage error when it is no distilled student."""
    from diffcli.models.lora import read_own

    own = read_own(student_dir)
    record = own.get(STUDENT_KEY)
    if not record:
        raise UsageError(
            f"--report {student_dir}: not a student written by `diffcli distill` (no '{STUDENT_KEY}' in diffcli.json)"
        )
    return own, record


def _report_rows(td: dict, own: dict, teacher, student) -> list[tuple]:
    """The report's rows, (who, pipe, steps, cfg, scheduler, cfg_cutoff, shift): the teacher at its defaults
    TD, then the student (settings OWN) at each of STUDENT_STEPS."""
    rows = [
        (
            "teacher",
            teacher,
            int(td.get("steps") or 25),
            float(td.get("cfg") or 7.0),
            td.get("scheduler"),
            float(td.get("cfg_cutoff") or 0.0),
            float(td.get("shift") or 1.0),
        )
    ]
    s_cfg, s_shift = float(own.get("cfg") or 1.0), float(own.get("shift") or 1.0)
    rows += [("student", student, k, s_cfg, "lcm", 0.0, s_shift) for k in STUDENT_STEPS]
    return rows


def _score_rows(rows, prompts, size, evaluator, events) -> tuple[list[dict], list[list]]:
    """Generate PROMPTS for each row and score the images; return (result rows, up to 8 sample images per row)."""
    results, samples, teacher_images = [], [], None
    for who, pipe, steps, cfg, sched, cutoff, shift in rows:
        events.phase("report", model=who, steps=steps)
        images = _generate(pipe, prompts, steps, cfg, size, cutoff, shift=shift)
        row = {"model": who, "steps": steps, "cfg": cfg, "cfg_cutoff": cutoff, "shift": shift, "scheduler": sched}
        if evaluator is not None:
            sc = evaluator.score(prompts, images)
            row.update(
                adherence=round(sc["adherence"], 4),
                fd=round(sc["fd"], 3),
                accuracy={k: round(v, 4) for k, v in sc["accuracy"].items()},
            )
        if who == "teacher":
            teacher_images = images
        else:
            row["psnr_vs_teacher_db"] = round(float(np.mean([_psnr(a, b) for a, b in zip(images, teacher_images)])), 2)
        results.append(row)
        samples.append(images[:8])
    return results, samples


def _bars(rows: list[dict]) -> dict:
    t = rows[0]
    s4 = next(r for r in rows if r["model"] == "student" and r["steps"] == 4)
    adh = s4["adherence"] / t["adherence"] if t["adherence"] else float("nan")
    fd = s4["fd"] / t["fd"] if t["fd"] else float("nan")
    tr = s4["sec_per_image"] / t["sec_per_image"] if t["sec_per_image"] else float("nan")
    return {
        "adherence_ratio": round(adh, 4),
        "adherence_ok": adh >= BARS["adherence_ratio_min"],
        "fd_ratio": round(fd, 4),
        "fd_ok": fd <= BARS["fd_ratio_max"],
        "time_ratio": round(tr, 4),
        "time_ok": tr <= BARS["time_ratio_max"],
        "limits": BARS,
    }


def markdown(report: dict) -> str:
    quality = report["bars"] is not None
    lines = [
        f"# Distillation report: {report['student']}",
        "",
        f"Teacher `{report['teacher']}`, method `{report['method']}`, {report['train_steps']} training steps; "
        f"student UNet {report.get('student_unet', 'full')}, autoencoder {report.get('student_vae', 'teacher')}. "
        f"{report['prompts']} prompts ({report['prompt_source']}), {report['size']}x{report['size']}, "
        f"{report['device']} ({report['threads']} threads), seeds 0..{report['prompts'] - 1}.",
        "",
    ]
    head = (
        "| model | steps | cfg | shift | s/image |"
        + (" adherence | FD |" if quality else "")
        + " PSNR vs teacher (dB) |"
    )
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in report["rows"]:
        cells = [r["model"], str(r["steps"]), f"{r['cfg']:g}", f"{r.get('shift', 1.0):g}", f"{r['sec_per_image']:.3f}"]
        if quality:
            cells += [f"{r['adherence']:.3f}", f"{r['fd']:.2f}"]
        cells.append(str(r.get("psnr_vs_teacher_db", "-")))
        lines.append("| " + " | ".join(cells) + " |")
    if quality:
        attrs = list(report["rows"][0].get("accuracy", {}))
        lines += [
            "",
            "Per-attribute accuracy (prompted attributes the evaluator recognises):",
            "",
            "| model | steps | " + " | ".join(attrs) + " |",
            "|" + "---|" * (len(attrs) + 2),
        ]
        for r in report["rows"]:
            lines.append(
                f"| {r['model']} | {r['steps']} | " + " | ".join(f"{r['accuracy'][a]:.3f}" for a in attrs) + " |"
            )
        b = report["bars"]
        mark = {True: "pass", False: "FAIL"}
        lines += [
            "",
            "4-step student vs teacher:",
            "",
            f"- prompt adherence ratio {b['adherence_ratio']:.3f} (>= {b['limits']['adherence_ratio_min']}): "
            f"{mark[b['adherence_ok']]}",
            f"- Fréchet distance ratio {b['fd_ratio']:.3f} (<= {b['limits']['fd_ratio_max']}): {mark[b['fd_ok']]}",
            f"- time per image ratio {b['time_ratio']:.3f} (<= {b['limits']['time_ratio_max']}): {mark[b['time_ok']]}",
        ]
    lines += ["", "report.png: first prompts, one row per model (teacher, then student at 1, 2, 4, 8 steps).", ""]
    return "\n".join(lines)


def _grid(rows: list[list], size: int):
    from PIL import Image

    cols = max(len(r) for r in rows)
    grid = Image.new("RGB", (cols * size, len(rows) * size), "white")
    for y, row in enumerate(rows):
        for x, im in enumerate(row):
            grid.paste(im.resize((size, size)), (x * size, y * size))
    return grid

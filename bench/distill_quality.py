"""The issue's bars for `diffcli distill` with the bundled teacher, measured end to end.

    python bench/distill_quality.py [--out /tmp/tiny-lcm] [--resume] [-- extra distill flags]

Runs `diffcli distill --teacher tiny --out OUT --json` with the default settings (data rendering,
training, export and the report all included in the wall time), then prints one JSON line:
total minutes, training steps/s, and the report's 4-step-student checks (adherence >= 0.95x teacher,
FD <= 1.25x teacher, time per image <= 0.2x teacher). `--report-only` re-reads an existing OUT.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/tiny-lcm")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("extra", nargs="*", help="more `diffcli distill` flags (after --)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    t0 = time.time()
    done = {}
    if not a.report_only:
        cmd = [
            sys.executable,
            "-m",
            "diffcli",
            "distill",
            "--teacher",
            "tiny",
            "--out",
            str(out),
            "--json",
            *(["--resume"] if a.resume else []),
            *a.extra,
        ]
        proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            if line.startswith('{"event"'):
                ev = json.loads(line)
                if ev["event"] in ("train", "checkpoint", "report_row", "done", "phase", "warning"):
                    if ev["event"] != "train" or ev["step"] % 100 == 0:
                        print(line.strip(), file=sys.stderr, flush=True)
                if ev["event"] == "done":
                    done = ev
            else:
                print(line.rstrip(), file=sys.stderr)
        if proc.wait() != 0:
            sys.exit(proc.returncode)
    rep = json.loads((out / "report.json").read_text())
    rows = {(r["model"], r["steps"]): r for r in rep["rows"]}
    teacher = rep["rows"][0]
    s4 = rows[("student", 4)]
    print(
        json.dumps(
            {
                "total_min": round((time.time() - t0) / 60, 1) if not a.report_only else None,
                "train_steps": rep["train_steps"],
                "steps_per_s": done.get("steps_per_s"),
                "teacher": {k: teacher.get(k) for k in ("steps", "sec_per_image", "adherence", "fd")},
                "student4": {k: s4.get(k) for k in ("sec_per_image", "adherence", "fd", "psnr_vs_teacher_db")},
                "bars": rep.get("bars"),
            }
        )
    )


if __name__ == "__main__":
    main()

"""Cold start of the main job: `python -m diffcli txt2img "castle at dusk" -o DIR -q` against a baseline.

The baseline is a git checkout of an earlier commit (a temporary `git worktree`, removed afterwards);
the candidate is this working tree (or --candidate REF). Each run is a fresh process started in its
tree's root, so `python -m diffcli` imports that tree's package (the same virtual environment, the
same libraries). Runs alternate A B, B A, ... so drifting load on the machine hits both alike; the
median and the minimum wall time and the median CPU time (user + sys of the child) of each side are
printed with their ratios (candidate / baseline); on a machine shared with other jobs the minimum is
the closest to an idle run, and --wait-idle starts each run only when the other processes leave the
CPUs nearly idle. `--seed 1` is added so the images can be compared: every run's pixels must equal
the first baseline image's (the script exits 1 if not).

    python bench/cold_start.py [-n 7] [--baseline REF] [--candidate REF] [--wait-idle]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = "e323666"  # the last commit before the cold-start work (issue 16, item 18)
COMMAND = ["-m", "diffcli", "txt2img", "castle at dusk", "-q", "--seed", "1"]


def _worktree(ref: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(where), ref], check=True)
    return where


def _busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over SECONDS (from /proc/stat)."""

    def sample():
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def _wait_idle(limit: float = 0.15, patience: float = 600) -> None:
    deadline = time.monotonic() + patience
    while _busy() > limit and time.monotonic() < deadline:
        time.sleep(4)


def _run(tree: Path, out: Path, env: dict) -> tuple[float, float, Path]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, *COMMAND, "-o", str(out)], cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{tree}: exit {r.returncode}\n{r.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, Path(r.stdout.split()[0])


def _pixels(path: Path) -> bytes:
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB").tobytes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=7, help="runs per side")
    ap.add_argument("--baseline", default=DEFAULT_BASELINE, help=f"git ref (default {DEFAULT_BASELINE})")
    ap.add_argument("--candidate", default=None, help="git ref (default: this working tree)")
    ap.add_argument(
        "--wait-idle",
        action="store_true",
        help="start each run only when the CPUs are at most 15%% busy (waits up to 10 min)",
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cold-start-"))
    trees = {}
    try:
        trees["baseline"] = _worktree(args.baseline, tmp / "baseline")
        trees["candidate"] = _worktree(args.candidate, tmp / "candidate") if args.candidate else ROOT
        env = {**os.environ, "DIFFCLI_HOME": str(tmp / "home"), "HF_HOME": str(tmp / "hf"), "HF_HUB_OFFLINE": "1"}
        env.pop("DIFFCLI_MODEL", None)
        times = {side: {"wall": [], "cpu": []} for side in trees}
        reference, same = None, True
        for i in range(args.n):
            order = ["baseline", "candidate"] if i % 2 == 0 else ["candidate", "baseline"]
            for side in order:
                if args.wait_idle:
                    _wait_idle()
                wall, cpu, image = _run(trees[side], tmp / "out" / f"{side}-{i}", env)
                times[side]["wall"].append(wall)
                times[side]["cpu"].append(cpu)
                pixels = _pixels(image)
                reference = reference or pixels
                same = same and pixels == reference
                print(
                    f"run {i + 1}/{args.n} {side:9s} wall {wall:6.2f} s  cpu {cpu:6.2f} s", file=sys.stderr, flush=True
                )
    finally:
        for side in ("baseline", "candidate"):
            if side in trees and trees[side] != ROOT:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees[side])], check=False)
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"command: python {' '.join(repr(a) if ' ' in a else a for a in COMMAND)} -o DIR   ({args.n} runs each, "
        f"baseline {args.baseline}, candidate {args.candidate or 'working tree'}"
        f"{', --wait-idle' if args.wait_idle else ''}, load average "
        f"{os.getloadavg()[0]:.2f} at the end)"
    )
    med = {side: {k: statistics.median(v) for k, v in t.items()} for side, t in times.items()}
    low = {side: min(t["wall"]) for side, t in times.items()}
    for side in ("baseline", "candidate"):
        print(
            f"{side:9s}  wall median {med[side]['wall']:6.2f} s  min {low[side]:6.2f} s  max "
            f"{max(times[side]['wall']):6.2f} s   cpu median {med[side]['cpu']:6.2f} s"
        )
    print(
        f"ratio candidate/baseline: wall median {med['candidate']['wall'] / med['baseline']['wall']:.3f}  "
        f"wall min {low['candidate'] / low['baseline']:.3f}  cpu median "
        f"{med['candidate']['cpu'] / med['baseline']['cpu']:.3f}"
    )
    print(f"pixels: {'identical in every run' if same else 'DIFFER'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

"""Startup time: `diffcli --help` against `python -c pass` and `python -c "import diffusers"`.

Each command runs as a fresh process, interleaved, N times; the median is reported with ratios.

    python bench/startup.py [-n 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "diffcli --help": [sys.executable, "-m", "diffcli", "--help"],
    "python -c 'import diffusers'": [sys.executable, "-c", "import diffusers"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=15)
    args = parser.parse_args()
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for _ in range(args.n):
        for name, cmd in COMMANDS.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["python -c pass"])
    help_t = statistics.median(times["diffcli --help"])
    for name, values in times.items():
        med = statistics.median(values)
        print(
            f"{name:32s} median {med * 1000:7.1f} ms  (x{med / base:.2f} of python -c pass, "
            f"x{med / help_t:.2f} of diffcli --help)"
        )


if __name__ == "__main__":
    main()

"""A shell loop of `diffcli txt2img` calls with a running `diffcli serve` vs without one.

    python bench/serve.py -n 5                    # the bundled model, 5 calls each way
    python bench/serve.py -n 20 --model tiny-lcm --rounds 3

Each call is one `python -m diffcli txt2img PROMPT --seed S` process, as a script would make it. With a
server (started here on a private socket, stopped at the end) the calls send their jobs to it, which
keeps torch and the model loaded; without one (--no-server) each call imports torch and loads the
model itself. The two loops alternate --rounds times; the ratio of their median wall times is
printed. Both make the same pixels (tests/serve checks that), so only time differs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = [
    "red house on the left",
    "blue car at night",
    "snowy castle",
    "green tree in a field",
    "yellow sun over the sea",
    "small boat on a lake",
    "white tower at dusk",
    "castle at dusk",
]


def _loop(n: int, model: str, out: Path, env: dict, served: bool, overheads: list[float] | None = None) -> list[float]:
    """Wall time of each of N calls. With OVERHEADS, also what each call spent outside its job: its wall
    time less the job's own time (the `total_s` of its `done` event: the engine's, on the server)."""
    flags = [] if served else ["--no-server"]
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "diffcli",
                "txt2img",
                PROMPTS[i % len(PROMPTS)],
                "--seed",
                str(i),
                "--model",
                model,
                "-o",
                str(out),
                *flags,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # stderr not a terminal: JSON events
        times.append(time.perf_counter() - t0)
        if overheads is not None and i > 0:  # (the first call waits for the model to load)
            done = [json.loads(line) for line in p.stderr.splitlines() if line.startswith('{"event": "done"')]
            overheads.append(times[-1] - done[-1]["total_s"])
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5, help="calls per loop")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dcb", dir="/tmp") as tmp:
        socket_path = Path(tmp) / "s.sock"
        env = {**os.environ, "DIFFCLI_SERVER_SOCKET": str(socket_path)}
        env.pop("DIFFCLI_SERVER", None)
        # an installed diffcli has compiled bytecode (pip compiles it): let the calls write and reuse theirs
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        server = subprocess.Popen(
            [sys.executable, "-m", "diffcli", "serve", "--idle", "10m"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            from diffcli.serve.client import request

            while request("status", socket_path) is None:
                if server.poll() is not None:
                    sys.exit("the server did not start")
                time.sleep(0.1)
            # the first served call loads the model in the server: timed too, as a user's first call is
            print(f"model {args.model}, {args.n} txt2img calls per loop, {args.rounds} round(s)")
            served, alone, overheads = [], [], []
            for r in range(args.rounds):
                served.append(_loop(args.n, args.model, Path(tmp) / f"served{r}", env, True, overheads))
                alone.append(_loop(args.n, args.model, Path(tmp) / f"alone{r}", env, False))
            with_server = statistics.median(sum(t) for t in served)
            without = statistics.median(sum(t) for t in alone)
            print(f"without a server: {without:7.1f} s  ({without / args.n:.2f} s per call)")
            print(
                f"with a server:    {with_server:7.1f} s  ({with_server / args.n:.2f} s per call; the first call "
                f"{served[0][0]:.1f} s, as the server loads the model)"
            )
            print(f"with a server the loop is {without / with_server:.1f}x faster")
            if args.n > 1:
                warm = statistics.median(t for times in served for t in times[1:])
                cold = statistics.median(t for times in alone for t in times)
                print(f"a call once the model is loaded: {warm:.2f} s vs {cold:.2f} s, {cold / warm:.1f}x faster")
                print(
                    f"client overhead of a served call (process start to result, less the job's own time): "
                    f"median {statistics.median(overheads):.3f} s, max {max(overheads):.3f} s"
                )
        finally:
            request("stop", socket_path)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()

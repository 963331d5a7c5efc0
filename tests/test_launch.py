"""diffcli batch --launcher accelerate|ray: several processes make exactly the files one process makes.

Pixels are compared with a single process that uses as many CPU threads as each launched one
(OMP_NUM_THREADS=1): float32 sums on a CPU can round differently with another thread count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import cli, pixels, subprocess_cli

FAST = ["--steps", "2", "--dtype", "float32"]
FLAGS = ["--keep-going", *FAST]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _write_jobs(path, tiny_sd) -> None:
    """Four good jobs and one that fails when it runs (its model is not there), last."""
    lines = [{"prompt": f"scene {i}", "model": str(tiny_sd)} for i in range(4)]
    lines.append({"prompt": "lost", "model": str(path.parent / "no-such-model")})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.fixture(scope="module")
def single(tiny_sd, tmp_path_factory):
    """The job list run by one process: (job list, output directory)."""
    root = tmp_path_factory.mktemp("single")
    jobs = root / "jobs.jsonl"
    _write_jobs(jobs, tiny_sd)
    env = {**ONE_THREAD, "DIFFCLI_HOME": str(root / "home"), "HF_HOME": str(root / "hf")}
    r = subprocess_cli("batch", jobs, *FLAGS, "-o", root / "out", "-q", env=env)
    assert r.returncode == 1, r.stderr  # the lost model's job failed, the others ran
    assert len(r.stdout.split()) == 4
    return jobs, root / "out"


def _same_files(out, single_out) -> None:
    names = sorted(p.name for p in out.glob("*.png"))
    assert len(names) == 4 and names == sorted(p.name for p in single_out.glob("*.png"))
    for name in names:
        assert np.array_equal(pixels(out / name), pixels(single_out / name)), name
    manifest = (out / "diffcli-manifest.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["paths"][0] for x in manifest) == names  # each job recorded once


def _events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_accelerate_two_processes_make_the_files_of_one(single, tmp_path):
    jobs, single_out = single
    out = tmp_path / "out"
    r = subprocess_cli("batch", jobs, *FLAGS, "-o", out, "--json",
                       "--launcher", "accelerate", "--processes", "2", env=ONE_THREAD)
    assert r.returncode == 1, r.stderr  # a job failed on one rank: the whole run says so
    made = [json.loads(line)["path"] for line in r.stdout.splitlines()]
    assert len(made) == 4 == len(set(made))  # every file once on stdout, none twice
    events = _events(r.stderr)
    ran = [e for e in events if e["event"] == "job"]
    assert len(ran) == 4 and {e["rank"] for e in ran} == {0, 1}  # both ranks worked, no job twice
    assert any(e["event"] == "warning" and "line 5" in e["message"] for e in events)
    _same_files(out, single_out)
    again = subprocess_cli("batch", jobs, *FLAGS, "-o", out, "-q", "--launcher", "accelerate", "--processes", "2",
                           env=ONE_THREAD)
    assert again.returncode == 1 and sorted(again.stdout.split()) == sorted(made)  # finished jobs are listed


def test_ray_two_workers_make_the_files_of_one(single, tmp_path, monkeypatch):
    pytest.importorskip("ray.data")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a local Ray, started and stopped by the command
    jobs, single_out = single
    out = tmp_path / "out"
    r = subprocess_cli("batch", jobs, *FLAGS, "-o", out, "--json", "--launcher", "ray",
                       "--processes", "2", env=ONE_THREAD, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    made = [json.loads(line)["path"] for line in r.stdout.splitlines()]
    assert len(made) == 4 == len(set(made))
    events = _events(r.stderr)
    assert len([e for e in events if e["event"] == "job"]) == 4
    assert [e["jobs_failed"] for e in events if e["event"] == "batch_done"] == [1]
    _same_files(out, single_out)


def test_launcher_flags_are_checked_before_anything_starts(tmp_path, monkeypatch):
    jobs = tmp_path / "p.txt"
    jobs.write_text("a castle\n")
    for args, message in ((["--processes", "2"], "--processes needs --launcher"),
                          (["--launcher", "slurm"], "invalid --launcher 'slurm'"),
                          (["--launcher", "accelerate", "--address", "auto"], "--address needs --launcher ray"),
                          (["--launcher", "ray", "--processes", "0"], "--processes must be at least 1")):
        r = cli("batch", jobs, "-o", tmp_path / "o", *args)
        assert r.exit_code == 2 and message in r.stderr and r.stdout == "", (args, r.stderr)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    r = cli("batch", jobs, "-o", tmp_path / "o", "--launcher", "ray")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "diffcli: error: --launcher ray needs Ray, which is not installed here: pip install 'diffcli[ray]'"]
    assert not (tmp_path / "o").exists()


def test_batch_help_loads_neither_torch_nor_ray():
    code = ("import sys\nfrom diffcli.cli.app import main\nsys.argv = ['diffcli', 'batch', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'ray', 'accelerate', 'diffusers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ})
    assert "--launcher" in r.stdout and r.stdout.strip().splitlines()[-1] == "[]", r.stderr

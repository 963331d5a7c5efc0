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
from PIL import Image

from helpers import cli, pixels, subprocess_cli

FAST = ["--steps", "2", "--dtype", "float32"]
FLAGS = ["--keep-going", *FAST]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _write_jobs(path, tiny_sd) -> None:
    """Four good jobs, one that fails when it runs (its model is not there), and a bad line, last."""
    lines = [json.dumps({"prompt": f"scene {i}", "model": str(tiny_sd)}) for i in range(4)]
    lines.append(json.dumps({"prompt": "lost", "model": str(path.parent / "no-such-model")}))
    lines.append(json.dumps({"prompt": "bad", "steps": 0}))  # rejected before anything runs: a failed job
    path.write_text("".join(line + "\n" for line in lines))


def _adapters(tiny_sd, root) -> list[str]:
    """Two --lora and two --control: repeatable options, which every rank must get as they were given."""
    from PIL import ImageDraw

    import lora_files
    import tiny_models

    a = lora_files.build_peft_lora(tiny_sd, root / "a.safetensors", seed=1, keys="peft")
    b = lora_files.build_peft_lora(tiny_sd, root / "b.safetensors", seed=2)
    cn = tiny_models.build_controlnet(root / "cn", tiny_sd)
    edges = Image.new("RGB", (32, 32))
    ImageDraw.Draw(edges).rectangle([6, 8, 20, 27], fill=(255, 255, 255))
    edges.save(root / "map.png")
    return [
        "--lora",
        str(a),
        "--lora",
        f"{b}:0.5",
        "--control",
        f"{cn}:{root / 'map.png'}:0.5",
        "--control",
        f"{cn}:{root / 'map.png'}:1:0:0.5",
    ]


@pytest.fixture(scope="module")
def single(tiny_sd, tmp_path_factory):
    """The job list run by one process: (job list, output directory, flags)."""
    root = tmp_path_factory.mktemp("single")
    jobs = root / "jobs.jsonl"
    _write_jobs(jobs, tiny_sd)
    flags = [*FLAGS, *_adapters(tiny_sd, root)]
    env = {**ONE_THREAD, "DIFFCLI_HOME": str(root / "home"), "HF_HOME": str(root / "hf")}
    r = subprocess_cli("batch", jobs, *flags, "-o", root / "out", "--json", env=env)
    assert r.returncode == 1, r.stderr  # the lost model's job failed and the bad line counts as failed; the others ran
    assert len(r.stdout.splitlines()) == 4
    assert [e["jobs_failed"] for e in _events(r.stderr) if e["event"] == "batch_done"] == [2]
    return jobs, root / "out", flags


def _same_files(out, single_out) -> None:
    names = sorted(p.name for p in out.glob("*.png"))
    assert len(names) == 4 and names == sorted(p.name for p in single_out.glob("*.png"))
    for name in names:
        assert np.array_equal(pixels(out / name), pixels(single_out / name)), name
        with Image.open(out / name) as img:
            job = json.loads(img.info["diffcli"])["job"]
        assert (len(job["lora"]), len(job["control"])) == (2, 2)  # both of each reached the rank
    manifest = (out / "diffcli-manifest.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["paths"][0] for x in manifest) == names  # each job recorded once


def _events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_accelerate_two_processes_make_the_files_of_one(single, tmp_path):
    jobs, single_out, flags = single
    out = tmp_path / "out"
    r = subprocess_cli(
        "batch", jobs, *flags, "-o", out, "--json", "--launcher", "accelerate", "--processes", "2", env=ONE_THREAD
    )
    assert r.returncode == 1, r.stderr  # a job failed on one rank: the whole run says so
    made = [json.loads(line)["path"] for line in r.stdout.splitlines()]
    assert len(made) == 4 == len(set(made))  # every file once on stdout, none twice
    events = _events(r.stderr)
    ran = [e for e in events if e["event"] == "job"]
    assert len(ran) == 4 and {e["rank"] for e in ran} == {0, 1}  # both ranks worked, no job twice
    assert any(e["event"] == "warning" and "line 5" in e["message"] for e in events)
    assert sum(e["jobs_failed"] for e in events if e["event"] == "batch_done") == 2  # the lost job, the bad line
    _same_files(out, single_out)
    again = subprocess_cli(
        "batch", jobs, *flags, "-o", out, "-q", "--launcher", "accelerate", "--processes", "2", env=ONE_THREAD
    )
    assert again.returncode == 1 and sorted(again.stdout.split()) == sorted(made)  # finished jobs are listed


def test_ray_two_workers_make_the_files_of_one(single, tmp_path, monkeypatch):
    pytest.importorskip("ray.data")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a local Ray, started and stopped by the command
    jobs, single_out, flags = single
    out = tmp_path / "out"
    r = subprocess_cli(
        "batch",
        jobs,
        *flags,
        "-o",
        out,
        "--json",
        "--launcher",
        "ray",
        "--processes",
        "2",
        env=ONE_THREAD,
        cwd=tmp_path,
    )
    assert r.returncode == 1, r.stderr
    made = [json.loads(line)["path"] for line in r.stdout.splitlines()]
    assert len(made) == 4 == len(set(made))
    events = _events(r.stderr)
    assert len([e for e in events if e["event"] == "job"]) == 4
    assert [e["jobs_failed"] for e in events if e["event"] == "batch_done"] == [2]
    _same_files(out, single_out)


def test_launcher_flags_are_checked_before_anything_starts(tmp_path, monkeypatch):
    jobs = tmp_path / "p.txt"
    jobs.write_text("a castle\n")
    for args, message in (
        (["--processes", "2"], "--processes needs --launcher"),
        (["--launcher", "slurm"], "invalid --launcher 'slurm'"),
        (["--launcher", "accelerate", "--address", "auto"], "--address needs --launcher ray"),
        (["--launcher", "ray", "--processes", "0"], "--processes must be at least 1"),
    ):
        r = cli("batch", jobs, "-o", tmp_path / "o", *args)
        assert r.exit_code == 2 and message in r.stderr and r.stdout == "", (args, r.stderr)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    r = cli("batch", jobs, "-o", tmp_path / "o", "--launcher", "ray")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "diffcli: error: --launcher ray needs Ray, which is not installed here: pip install 'diffcli[ray]'"
    ]
    assert not (tmp_path / "o").exists()


def test_a_rank_is_given_every_option_as_the_user_gave_it():
    """The command line `--launcher accelerate` gives its ranks, read by the batch command's own parser,
    holds what the user's did: repeatable options once per value, values that look like flags, spaces."""
    import typer

    from diffcli.cli.app import app
    from diffcli.launch import _shared_flags

    command = typer.main.get_command(app).commands["batch"]
    given = [
        "--lora",
        "a b.safetensors",
        "--lora",
        "b.safetensors:0.5",
        "--control",
        "seg:m.png:0.5",
        "--control",
        "canny:m.png:1:0:0.5",
        "--negative",
        "-blurry, --json",
        "--cfg",
        "3.5",
        "--seed",
        "0",
        "--keep-going",
        "-o",
        "out dir/",
        "--launcher",
        "accelerate",
        "--processes",
        "2",
        "--json",
        "--",
        "-jobs.jsonl",
    ]
    params = command.make_context("batch", given).params
    assert params["lora"] == ("a b.safetensors", "b.safetensors:0.5") and params["source"] == "-jobs.jsonl"
    rank = command.make_context("batch", _shared_flags(params)).params
    assert rank == {**params, "launcher": None, "processes": None}


def test_batch_help_loads_neither_torch_nor_ray():
    code = (
        "import sys\nfrom diffcli.cli.app import main\nsys.argv = ['diffcli', 'batch', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'ray', 'accelerate', 'diffusers') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ})
    assert "--launcher" in r.stdout and r.stdout.strip().splitlines()[-1] == "[]", r.stderr

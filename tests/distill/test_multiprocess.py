"""Two processes (gloo on the CPU, launched like `accelerate launch`/torchrun would) train one student."""

import json
import subprocess
import sys

from helpers import ROOT


def test_two_processes(fast_sd, photos, tmp_path):
    out = tmp_path / "student"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "diffcli",
        "distill",
        "--teacher",
        str(fast_sd),
        "--data",
        str(photos),
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--max-train-steps",
        "2",
        "--checkpoint-every",
        "1",
        "--no-report",
        "--json",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = tmp_path / "student.distill"
    ranks = [json.loads((ckpt / f"rank-{i}.json").read_text()) for i in range(2)]
    assert [x["world_size"] for x in ranks] == [2, 2]
    assert len({x["pid"] for x in ranks}) == 2
    assert all("MULTI_CPU" in x["distributed_type"] for x in ranks)
    events = [json.loads(line) for line in r.stderr.splitlines() if line.startswith('{"event"')]
    start = next(e for e in events if e["event"] == "start")
    assert start["processes"] == 2 and start["batch"] == 4
    assert len([e for e in events if e["event"] == "start"]) == 1  # only the main process reports
    assert r.stdout.strip() == str(out)  # and prints the result once
    assert sorted(p.name for p in (ckpt / "checkpoint-0000002").iterdir()) == ["rng-0.pt", "rng-1.pt", "state.pt"]
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()

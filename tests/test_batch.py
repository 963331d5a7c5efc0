"""diffcli batch: one process, models loaded once, resumable, shardable, pixel-identical to the commands."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from helpers import cli, pixels

FAST = ["--steps", "2", "--dtype", "float32"]


def _events(result) -> list[dict]:
    return [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]


def test_a_batch_job_makes_the_same_pixels_as_the_command(tiny_sd, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        json.dumps({"prompt": "red house", "seed": 5, "cfg": 3.0})
        + "\n"
        + json.dumps({"prompt": "blue car", "seed": 9, "num_images": 2})
        + "\n"
    )
    from diffcli.pipelines import release_models

    release_models()  # earlier tests in this process may hold the model
    b = cli("batch", jobs, "-m", tiny_sd, *FAST, "-o", tmp_path / "b", "--json")
    assert b.exit_code == 0, b.stderr
    made = [json.loads(line)["path"] for line in b.stdout.splitlines()]
    assert len(made) == 3
    loads = [e for e in _events(b) if e.get("phase") == "load"]
    assert [e["cached"] for e in loads] == [False, True]  # the model loaded once for both jobs
    one = cli("txt2img", "red house", "--seed", "5", "--cfg", "3", "-m", tiny_sd, *FAST, "-o", tmp_path / "c", "-q")
    two = cli("txt2img", "blue car", "--seed", "9", "-n", "2", "-m", tiny_sd, *FAST, "-o", tmp_path / "c", "-q")
    singles = one.stdout.split() + two.stdout.split()
    for a, c in zip(made, singles):
        assert np.array_equal(pixels(a), pixels(c)), (a, c)


def test_a_rerun_skips_finished_jobs_and_lists_their_files(tiny_sd, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("red house\n# a comment\n\nblue car\n")
    first = cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", tmp_path / "o", "--json")
    assert first.exit_code == 0, first.stderr
    files = sorted((tmp_path / "o").glob("*.png"))
    assert [f.name[:5] for f in files] == ["00001", "00004"]  # named after their lines
    stamps = [f.stat().st_mtime_ns for f in files]
    again = cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", tmp_path / "o", "--json")
    assert again.exit_code == 0, again.stderr
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert not [e for e in _events(again) if e["event"] == "job"]
    assert sorted(json.loads(x)["path"] for x in again.stdout.splitlines()) == sorted(map(str, files))
    (tmp_path / "o" / "diffcli-manifest.jsonl").unlink()  # files present but unrecorded: recognised by key
    third = cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", tmp_path / "o", "--json")
    assert [e["reason"] for e in _events(third) if e["event"] == "job_skipped"] == ["files present"] * 2


def test_bad_lines_are_reported_with_their_number_before_anything_runs(tiny_sd, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"prompt": "ok"}\n{"prompt": "x", "steps": 0}\n{"promt": "typo"}\nnot json\n')
    r = cli("batch", jobs, "-m", tiny_sd, *FAST, "-o", tmp_path / "o")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines()[-1].startswith(f"diffcli: error: {jobs}:2: --steps")
    assert "2 more bad lines" in r.stderr
    assert not (tmp_path / "o").exists()
    kept = cli("batch", jobs, "-m", tiny_sd, *FAST, "-o", tmp_path / "o", "--keep-going", "--json")
    assert kept.exit_code == 1, kept.stderr  # the good line ran; the three bad ones count as failed jobs
    assert len(kept.stdout.splitlines()) == 1 and ":3: unknown field(s) promt" in kept.stderr
    assert [(e["jobs_done"], e["jobs_failed"]) for e in _events(kept) if e["event"] == "batch_done"] == [(1, 3)]


def test_keep_going_with_every_line_rejected_exits_1(tiny_sd, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"prompt": "x", "steps": 0}\n{"promt": "typo"}\nnot json\n')
    r = cli("batch", jobs, "-m", tiny_sd, *FAST, "-o", tmp_path / "o", "--keep-going", "--json")
    assert r.exit_code == 1 and r.stdout == "", r.stderr
    assert [e["jobs_failed"] for e in _events(r) if e["event"] == "batch_done"] == [3]
    assert not (tmp_path / "o").exists()  # nothing ran: the folder it made for the run is gone again
    # shards share the bad lines out as they share the jobs: together they count each one once
    shards = [
        cli("batch", jobs, "-m", tiny_sd, *FAST, "-o", tmp_path / "o", "--keep-going", "--json", "--shard", f"{i}/2")
        for i in range(2)
    ]
    assert sum(e["jobs_failed"] for s in shards for e in _events(s) if e["event"] == "batch_done") == 3
    assert [s.exit_code for s in shards] == [1, 1]


def test_shards_together_make_what_one_run_makes(tiny_sd, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(5)))
    whole = cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", tmp_path / "whole", "-q")
    parts = [
        cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", tmp_path / "parts", "-q", "--shard", f"{i}/2")
        for i in range(2)
    ]
    assert whole.exit_code == 0 and all(p.exit_code == 0 for p in parts)
    assert [len(p.stdout.split()) for p in parts] == [3, 2]  # disjoint shares
    names = sorted(p.name for p in (tmp_path / "whole").glob("*.png"))
    assert names == sorted(p.name for p in (tmp_path / "parts").glob("*.png"))
    for name in names:
        assert np.array_equal(pixels(tmp_path / "whole" / name), pixels(tmp_path / "parts" / name))
    bad = cli("batch", prompts, "--shard", "2/2")
    assert bad.exit_code == 2 and "--shard" in bad.stderr


def test_kill_9_then_rerun_finishes_without_redoing_anything(tiny_sd, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"scene {i}\n" for i in range(12)))
    out = tmp_path / "o"
    cmd = [
        sys.executable,
        "-m",
        "diffcli",
        "batch",
        str(prompts),
        "-m",
        str(tiny_sd),
        "--steps",
        "20",
        "--dtype",
        "float32",
        "-o",
        str(out),
        "--json",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    saved = 0
    for line in proc.stderr:
        saved += '"event": "saved"' in line
        if saved >= 3:
            break
        assert time.time() < deadline
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert 3 <= len(before) < 12
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    ran = [json.loads(x) for x in rerun.stderr.splitlines() if '"event": "job"' in x]
    assert len(ran) == 12 - len(before)  # nothing finished is redone
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert len(after) == 12 and all(after[n] == t for n, t in before.items())
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp file, no stale marker
    assert len(rerun.stdout.splitlines()) == 12


def test_jobs_that_agree_are_denoised_together(tiny_sd, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    lines = [
        {"prompt": "red house", "seed": 1},
        {"prompt": "blue car", "seed": 2, "num_images": 2},
        {"prompt": "other size", "seed": 3, "width": 48, "height": 48},
        {"prompt": "snow", "seed": 4},
    ]
    jobs.write_text("".join(json.dumps(x) + "\n" for x in lines))
    alone = cli("batch", jobs, "-m", tiny_sd, *FAST, "-o", tmp_path / "a", "--json")
    together = cli("batch", jobs, "-m", tiny_sd, *FAST, "-o", tmp_path / "b", "--json", "--batch-size", "4")
    assert alone.exit_code == 0 and together.exit_code == 0, together.stderr
    batches = [e["count"] for e in _events(together) if e["event"] == "batch"]
    assert sorted(batches) == [1, 4]  # four 32-px images of three jobs in one batch; the 48-px job alone
    names = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert names == sorted(p.name for p in (tmp_path / "b").glob("*.png")) and len(names) == 5
    for name in names:  # batched matmuls may round differently, as with -n N --batch-size N
        assert np.abs(pixels(tmp_path / "a" / name) - pixels(tmp_path / "b" / name)).max() <= 2
    manifest = (tmp_path / "b" / "diffcli-manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 4
    again = cli("batch", jobs, "-m", tiny_sd, *FAST, "-o", tmp_path / "b", "--json", "--batch-size", "4")
    assert not [e for e in _events(again) if e["event"] == "job"]


def test_derived_seeds_stay_those_of_earlier_versions(tmp_path):
    """A line without a seed gets one from what it asks; Job fields added since seeds were derived
    (cache, vae_decoder, inpaint_model) must not change it, so a list makes the same images with a
    newer diffcli. The values are what diffcli c0101a9 (before those fields) gave this list."""
    from diffcli.batch import read_lines
    from diffcli.jobs import Job

    text, jsonl = tmp_path / "jobs.txt", tmp_path / "jobs.jsonl"
    text.write_text("red house\nred house\nblue tree\n")
    jsonl.write_text(
        '{"prompt": "red house", "cache": null}\n{"prompt": "red house"}\n'
        '{"prompt": "blue tree", "vae_decoder": null}\n'
    )
    expected = [18374733, 1132400627, 1107456660]
    for source in (text, jsonl):
        assert [line.job.seed for line in read_lines(str(source), Job(task="txt2img"), False, print)] == expected
    # where a list runs and how many images share a batch do not change its seeds (nor, so, its resume keys)
    for flags in ({"batch_size": 4}, {"dtype": "float32"}, {"device": "cpu"}):
        assert [line.job.seed for line in read_lines(str(text), Job(task="txt2img", **flags), False, print)] == expected
    cached = tmp_path / "cached.jsonl"  # a field that is set does count
    cached.write_text('{"prompt": "red house", "cache": "deepcache:3"}\n')
    assert read_lines(str(cached), Job(task="txt2img"), False, print)[0].job.seed != expected[0]


def test_a_run_of_an_earlier_version_resumes_without_redoing_its_jobs(tmp_path):
    """A finished job is known by its key in diffcli-manifest.jsonl; Job fields added since (cache, vae_decoder,
    inpaint_model) must not change it, or a run resumed with a newer diffcli redoes what was finished. The
    keys and the manifest are what diffcli c0101a9 (before those fields) wrote for these lines with the
    bundled model, run in a git worktree of it (`diffcli batch jobs.jsonl -o out --json`)."""
    import hashlib

    from PIL import Image, PngImagePlugin

    from diffcli.batch import HASHED_ALWAYS

    image, mask = tmp_path / "in.png", tmp_path / "mask.png"
    Image.new("RGB", (64, 64), (40, 90, 160)).save(image)
    Image.new("L", (64, 64), 255).save(mask)
    lines = [
        {"prompt": "red house on the left", "seed": 7},
        {"prompt": "blue tree", "seed": 3, "steps": 3, "cfg": 4.5},
        {"prompt": "red house"},  # its derived seed, 18374733, is in the key
        {"task": "img2img", "image": str(image), "prompt": "watercolor", "seed": 11, "strength": 0.5},
        {"task": "inpaint", "image": str(image), "mask": str(mask), "prompt": "a red door", "seed": 12},
        {"task": "outpaint", "image": str(image), "extend": "16,0,16,0", "prompt": "snowy ground", "seed": 13},
    ]

    # A key is the input image's absolute path, among the rest: for the lines with one, c0101a9's key is
    # remade here as its batch.settled_key made it, from the settled fields it hashed (its Job's fields,
    # unset ones null, and the model's fingerprint), with this test's paths in place of the ones it had.
    settled = {
        "negative": "",
        "steps": 15,
        "cfg": 5.0,
        "cfg_cutoff": 0.3,
        "shift": 1.0,
        "width": 64,
        "height": 64,
        "num_images": 1,
        "scheduler": "dpm++2m",
        "prompt_syntax": "a1111",
    }

    def c0101a9_key(**job) -> str:
        payload = {"job": {**dict.fromkeys(HASHED_ALWAYS), **settled, **job}, "model": "6d7b5ab872"}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    keys = [
        "3e87b819037a511d",
        "80edf8f5ed684d73",
        "cab4b8944fd7fd6f",
        c0101a9_key(task="img2img", prompt="watercolor", seed=11, strength=0.5, image=str(image)),
        c0101a9_key(
            task="inpaint", prompt="a red door", seed=12, strength=1.0, image=str(image), mask=str(mask), mask_blur=4
        ),
        c0101a9_key(
            task="outpaint",
            prompt="snowy ground",
            seed=13,
            width=96,
            strength=0.9,
            image=str(image),
            mask_blur=4,
            extend="16,0,16,0",
            fill="blur",
        ),
    ]
    assert c0101a9_key(task="txt2img", prompt="red house on the left", seed=7) == keys[0]  # remade as c0101a9 made it
    jobs, out = tmp_path / "jobs.jsonl", tmp_path / "out"
    jobs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out.mkdir()
    names = [
        f"{n:05d}-{key[:8]}-{line.get('seed', 18374733)}-{line['prompt'].replace(' ', '_')}.png"
        for n, (key, line) in enumerate(zip(keys, lines), 1)
    ]
    for name, key in zip(names, keys):  # each image records its job's key, as c0101a9's images do
        info = PngImagePlugin.PngInfo()
        info.add_text("diffcli", json.dumps({"diffcli": "0.1.0", "batch_key": key}))
        Image.new("RGB", (64, 64)).save(out / name, pnginfo=info)
    (out / "diffcli-manifest.jsonl").write_text(
        "".join(  # as c0101a9 wrote it
            json.dumps({"key": key, "line": n, "paths": [name], "t": 1796148117.834}) + "\n"
            for n, (key, name) in enumerate(zip(keys, names), 1)
        )
    )
    r = cli("batch", jobs, "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    events = _events(r)
    assert [(e["line"], e["key"], e["reason"]) for e in events if e["event"] == "job_skipped"] == [
        (n, key, "done") for n, key in enumerate(keys, 1)
    ]
    assert not [e for e in events if e["event"] == "job"]
    assert sorted(json.loads(x)["path"] for x in r.stdout.splitlines()) == sorted(str(out / n) for n in names)


def _one_job(tiny_sd, tmp_path):
    """A one-line list, run once in its own folder: (list, the file name its job gets, its key)."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("red house\n")
    r = cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", tmp_path / "first", "-q")
    assert r.exit_code == 0, r.stderr
    entry = json.loads((tmp_path / "first" / "diffcli-manifest.jsonl").read_text())
    return prompts, Path(r.stdout.strip()).name, entry["key"]


def test_a_manifest_line_counts_only_for_an_image_in_the_folder_that_carries_its_key(tiny_sd, tmp_path):
    import shutil

    from PIL import Image

    prompts, name, key = _one_job(tiny_sd, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    made = tmp_path / "first" / name
    shutil.copy(made, tmp_path / "outside.png")  # carries the key, but outside the output folder
    Image.new("RGB", (32, 32)).save(out / "plain.png")  # in the folder, but no key
    (out / "link.png").symlink_to(tmp_path / "outside.png")  # in the folder, a link to an image with the key
    manifest = out / "diffcli-manifest.jsonl"
    for paths in (
        ["/etc/passwd"],
        [str(made)],
        ["../outside.png"],
        ["../first/" + name],
        ["plain.png"],
        ["link.png"],
        [name, "/etc/passwd"],
    ):
        manifest.write_text(json.dumps({"key": key, "line": 1, "paths": paths, "t": 1.0}) + "\n")
        r = cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", out, "--json")
        assert r.exit_code == 0, (paths, r.stderr)
        assert [json.loads(x)["path"] for x in r.stdout.splitlines()] == [str(out / name)], paths
        assert len([e for e in _events(r) if e["event"] == "job"]) == 1, paths  # the job ran again
        assert np.array_equal(pixels(out / name), pixels(made))
        (out / name).unlink()
    # a plain name in the folder whose image carries the job's key is the job, done
    shutil.copy(made, out / "renamed.png")
    manifest.write_text(json.dumps({"key": key, "line": 1, "paths": ["renamed.png"], "t": 1.0}) + "\n")
    r = cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", out, "--json")
    assert r.exit_code == 0 and [json.loads(x)["path"] for x in r.stdout.splitlines()] == [str(out / "renamed.png")]
    assert [e["reason"] for e in _events(r) if e["event"] == "job_skipped"] == ["done"]
    # a manifest that is a link (here to one that would vouch for the job) is not read through
    (tmp_path / "elsewhere.jsonl").write_text(manifest.read_text())
    manifest.unlink()
    manifest.symlink_to(tmp_path / "elsewhere.jsonl")
    r = cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", out)
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
    assert "cannot read the batch manifest" in r.stderr


def _zombie() -> subprocess.Popen:
    """A child that has exited and is not reaped yet: its PID still answers kill(pid, 0)."""
    child = subprocess.Popen(["true"])
    deadline = time.time() + 30
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.time() < deadline
        time.sleep(0.01)
    return child


def test_a_dead_runs_reservation_does_not_block_the_resume(tiny_sd, tmp_path):
    """A run killed while writing leaves its marker; a rerun takes it over, even where the dead run's
    PID is a zombie or has been given to another process (here: this one)."""
    import os

    prompts, name, _ = _one_job(tiny_sd, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    zombie = _zombie()
    try:
        for pid in (zombie.pid, os.getpid()):
            marker = out / f".diffcli-{pid}-k1ll3d.reserved"
            marker.write_text(json.dumps([name]))
            r = cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", out, "-q")
            assert r.exit_code == 0, (pid, r.stderr)
            assert [Path(x).name for x in r.stdout.split()] == [name]
            assert not marker.exists() and [p.name for p in out.iterdir() if p.name.startswith(".")] == []
            (out / name).unlink()
            (out / "diffcli-manifest.jsonl").unlink()
    finally:
        zombie.wait()


def test_a_live_run_keeps_its_names(tiny_sd, tmp_path):
    """Two runs of one list into one folder at once: the second is refused the job the first is writing."""
    from helpers import default_sigint, wait_for_first_step

    prompts = tmp_path / "p.txt"
    prompts.write_text("red house\n")
    slow = ["-m", str(tiny_sd), "--steps", "1000", "--dtype", "float32", "-o", str(tmp_path / "o")]
    live = subprocess.Popen(
        [sys.executable, "-m", "diffcli", "batch", str(prompts), *slow, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        wait_for_first_step(live.stderr, timeout=120)
        r = cli("batch", prompts, *slow)
        assert r.exit_code == 2 and r.stdout == "", r.stderr
        assert r.stderr.strip().splitlines()[-1].endswith("is being written by another diffcli run")
    finally:
        live.send_signal(signal.SIGTERM)
        live.communicate(timeout=60)
    assert live.returncode == 143


def test_a_file_of_a_jobs_name_that_it_did_not_write_is_not_replaced(tiny_sd, tmp_path):
    """A file with the job's name whose image records no batch key (edited since it was made, its metadata
    gone) is refused, exit 2, and kept as it is; --overwrite replaces it."""
    from PIL import Image

    prompts, name, key = _one_job(tiny_sd, tmp_path)
    made = tmp_path / "first" / name
    with Image.open(made) as img:
        img.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(made)  # edited by hand: no metadata
    edited = made.read_bytes()
    r = cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", tmp_path / "first", "--json")
    assert r.exit_code == 2 and r.stdout == "", r.stderr
    assert f"{made} is there but is not this job's image" in r.stderr and "--overwrite" in r.stderr
    assert made.read_bytes() == edited
    r = cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", tmp_path / "first", "--overwrite", "-q")
    assert r.exit_code == 0 and r.stdout.strip() == str(made), r.stderr
    from diffcli.batch import carries_key

    assert carries_key(made, key)


def test_a_byte_order_mark_and_raw_line_separators_are_read_as_text(tiny_sd, tmp_path):
    """A UTF-8 BOM (Notepad, PowerShell) starts neither a prompt nor a JSON line; U+2028 inside a JSON
    string (jq writes it raw) does not end the line."""
    from diffcli.batch import read_lines
    from diffcli.jobs import Job

    base = Job(task="txt2img")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_bytes(b'\xef\xbb\xbf{"prompt": "castle", "steps": 1}\n{"prompt": "a\xe2\x80\xa8b"}\n')
    lines = read_lines(str(jobs), base, False, print)
    assert [(line.number, line.job.prompt, line.job.steps) for line in lines] == [
        (1, "castle", 1),
        (2, "a\u2028b", None),
    ]
    text = tmp_path / "prompts.txt"  # a prompts file: its first line a comment
    text.write_bytes(b"\xef\xbb\xbf# my prompts\nred house\n")
    assert [(line.number, line.job.prompt) for line in read_lines(str(text), base, False, print)] == [(2, "red house")]
    r = cli("batch", "-", "-m", tiny_sd, *FAST, "-o", tmp_path / "o", "-q", input='\ufeff{"prompt": "castle"}\n')
    assert r.exit_code == 0, r.stderr
    assert [p.name.split("-", 3)[-1] for p in (tmp_path / "o").glob("*.png")] == ["castle.png"]


def test_an_input_image_missing_on_any_line_stops_the_batch_before_a_model_loads(tiny_sd, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        json.dumps({"prompt": "castle"})
        + "\n"
        + json.dumps({"task": "img2img", "model": "tiny-lcm", "image": str(tmp_path / "nope.png"), "prompt": "x"})
        + "\n"
    )
    r = cli("batch", jobs, "-m", tiny_sd, *FAST, "-o", tmp_path / "o", "--json")
    assert r.exit_code == 2 and r.stdout == "", r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"diffcli: error: {jobs}:2: {tmp_path / 'nope.png'}: no such file"
    assert not [e for e in _events(r) if e.get("phase") == "load"] and not (tmp_path / "o").exists()


def test_a_shard_or_rank_that_names_no_share_is_refused(tiny_sd, tmp_path, monkeypatch):
    prompts = tmp_path / "p.txt"
    prompts.write_text("red house\n")
    r = cli("batch", prompts, "-m", tiny_sd, *FAST, "--shard", "")  # `--shard "$ID"` with ID unset
    assert r.exit_code == 2 and "invalid --shard ''" in r.stderr, r.stderr
    for world, rank, said in (("abc", "0", "must be numbers"), ("2", "5", "RANK 5 in the environment is not in 0..1")):
        monkeypatch.setenv("WORLD_SIZE", world)
        monkeypatch.setenv("RANK", rank)
        r = cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", tmp_path / "o")
        assert r.exit_code == 2 and said in r.stderr and r.stdout == "", r.stderr
    assert not (tmp_path / "o").exists()


def test_a_manifest_that_is_a_folder_or_a_fifo_is_refused(tiny_sd, tmp_path):
    import os

    prompts = tmp_path / "p.txt"
    prompts.write_text("red house\n")
    for kind in ("folder", "fifo"):
        out = tmp_path / kind
        out.mkdir()
        manifest = out / "diffcli-manifest.jsonl"
        manifest.mkdir() if kind == "folder" else os.mkfifo(manifest)
        r = cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", out)  # (a FIFO must not hang it)
        assert (
            r.exit_code == 2
            and r.stderr.strip() == f"diffcli: error: {manifest}: the batch manifest is not a regular file"
        )


def test_a_batch_output_that_names_a_file_is_refused(tiny_sd, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("red house\n")
    r = cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", tmp_path / "o" / "{seed}-{prompt}.png")
    assert r.exit_code == 2 and "a batch writes to a folder" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_a_rerun_in_another_format_makes_the_jobs_again_in_it(tiny_sd, tmp_path):
    """A finished job counts as done in the format it was made in; a rerun that asks for another --format
    makes it in that one (before: the earlier .jpg was listed for a --format webp run). Without --format the
    earlier files stand."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("red house\n")
    first = cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", tmp_path / "o", "--format", "jpg", "-q")
    assert first.exit_code == 0 and first.stdout.strip().endswith(".jpg"), first.stderr
    again = cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", tmp_path / "o", "-q")
    assert again.stdout == first.stdout  # no --format: what is there is the job, done
    webp = cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", tmp_path / "o", "--format", "webp", "-q")
    assert webp.exit_code == 0 and webp.stdout.strip().endswith(".webp"), webp.stderr
    assert sorted(p.suffix for p in (tmp_path / "o").iterdir() if p.suffix != ".jsonl") == [".jpg", ".webp"]
    webp_again = cli("batch", prompts, "-m", tiny_sd, *FAST, "-o", tmp_path / "o", "--format", "webp", "--json")
    assert webp_again.stdout.count("\n") == 1 and json.loads(webp_again.stdout)["path"] == webp.stdout.strip()
    assert [e["reason"] for e in _events(webp_again) if e["event"] == "job_skipped"] == ["done"]

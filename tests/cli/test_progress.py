"""What a person sees on a terminal: RichReporter's labels, the written paths once, one summary line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from rich.console import Console

from diffcli.progress import JsonReporter, RichReporter, summary_line


def _terminal() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=120, color_system=None, legacy_windows=False), buf


def _run_like_generate(reporter, paths, steps=3):
    """The calls diffcli.run makes for one batch of len(PATHS) images."""
    reporter.start("txt2img", len(paths), steps)
    reporter.phase("load")
    reporter.begin_batch(1, len(paths), steps)
    reporter.phase("encode")
    seen = [reporter.progress.tasks[0].description]
    for i in range(1, steps + 1):
        reporter.step(i, steps)
        seen.append(reporter.progress.tasks[0].description)
    reporter.phase("decode")
    reporter.phase("save")
    for k, path in enumerate(paths):
        reporter.saved(path, 40 + k, k + 1)
    reporter.done(images=len(paths), load_s=1.14, total_s=4.23)
    reporter.close()
    return seen


def test_text_encoder_phase_is_called_text_encode_on_a_terminal():
    console, _ = _terminal()
    seen = _run_like_generate(RichReporter(console=console, stdout_is_terminal=True), ["outputs/a.png"])
    assert seen[0] == "text encode"
    assert seen[1:] == ["denoise"] * 3


def test_json_phase_name_stays_encode():
    buf = io.StringIO()
    reporter = JsonReporter(buf)
    reporter.phase("encode")
    assert json.loads(buf.getvalue())["phase"] == "encode"


def test_summary_line_and_paths_not_repeated_when_stdout_is_the_terminal():
    console, buf = _terminal()
    paths = ["outputs/00000-40-castle.png", "outputs/00001-41-castle.png", "outputs/00002-42-castle.png"]
    _run_like_generate(RichReporter(console=console, stdout_is_terminal=True), paths)
    text = buf.getvalue()
    # stdout (the same terminal) carries the paths: stderr does not repeat them
    assert not any(p in text for p in paths)
    assert "3 images in 4.2 s (model load 1.1 s) → outputs/" in text
    assert text.count("images in") == 1


def test_saved_lines_when_stdout_is_redirected():
    console, buf = _terminal()
    paths = ["shots/a.png", "shots/b.png"]
    _run_like_generate(RichReporter(console=console, stdout_is_terminal=False), paths)
    text = buf.getvalue()
    assert "saved shots/a.png (seed 40)" in text and "saved shots/b.png (seed 41)" in text
    assert "2 images in 4.2 s (model load 1.1 s) → shots/" in text


def test_stdout_is_not_taken_over_when_redirected(tmp_path):
    """`diffcli txt2img ... > paths.txt` on a terminal: the paths written during the bar reach the file."""
    code = (
        "import io, sys\n"
        "from rich.console import Console\n"
        "from diffcli.progress import RichReporter\n"
        "err = io.StringIO()\n"
        "r = RichReporter(console=Console(file=err, force_terminal=True), stdout_is_terminal=False)\n"
        "r.start('txt2img', 1, 1); r.phase('load'); r.begin_batch(1, 1, 1); r.step(1, 1)\n"
        "sys.stdout.write('outputs/x.png\\n'); sys.stdout.flush()\n"
        "r.saved('outputs/x.png', 1, 1); r.done(images=1, load_s=0.1, total_s=0.2); r.close()\n"
        "sys.stderr.write(err.getvalue())\n"
    )
    out = tmp_path / "paths.txt"
    with open(out, "w") as f:
        p = subprocess.run([sys.executable, "-c", code], stdout=f, stderr=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert out.read_text() == "outputs/x.png\n"


def test_upscale_tiles_and_warnings_are_plain_text():
    console, buf = _terminal()
    r = RichReporter(console=console, stdout_is_terminal=True)
    r.start("upscale", 1, 8)
    r.phase("load")
    r.begin_batch(1, 1, 8)
    r.phase("denoise", tile=2, tiles=4)
    r.step(3, 8)
    assert r.progress.tasks[0].description == "denoise tile 2/4"
    r.warn("the bundled model does not know: [red]")  # square brackets are text, not rich markup
    r.close()
    assert "warning: the bundled model does not know: [red]" in buf.getvalue()


@pytest.mark.parametrize(
    "paths, expected",
    [
        (["a.png"], "./"),
        ([os.path.join("x", "y", "a.png"), os.path.join("x", "z", "b.png")], "x" + os.sep),
        (["/a.png"], "/"),
    ],
)
def test_summary_destination(paths, expected):
    assert summary_line(paths, images=len(paths), total_s=0.04).endswith(f"in 0.0 s → {expected}")
    assert summary_line([], images=0, total_s=1.0) == "0 images in 1.0 s"


# ---------------------------------------------------------------- distill's preparation phases
def _fake_vae():
    from types import SimpleNamespace

    import torch

    class FakeVAE:
        dtype = torch.float32

        def encode(self, x):
            z = x[:, :, ::4, ::4]
            return SimpleNamespace(latent_dist=SimpleNamespace(mean=z, std=torch.ones_like(z)))

    return FakeVAE()


def _folder_plan(tmp_path, n):
    from types import SimpleNamespace

    from PIL import Image

    items = []
    for i in range(n):
        img, txt = tmp_path / f"{i}.png", tmp_path / f"{i}.txt"
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(img)
        txt.write_text(f"caption {i}\n")
        items.append((img, txt))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    config = SimpleNamespace(resolution=8, num_samples=None, seed=0)
    return SimpleNamespace(ckpt=ckpt, config=config, source="folder", items=items)


def test_distill_reports_progress_while_the_vae_encodes(tmp_path):
    from types import SimpleNamespace

    from diffcli.distill.events import TrainEvents
    from diffcli.training.distill.data import build_bank

    buf = io.StringIO()
    bank = build_bank(
        _folder_plan(tmp_path, 5), SimpleNamespace(vae=_fake_vae()), "cpu", TrainEvents(JsonReporter(buf)), chunk=2
    )
    assert bank.mean.shape[0] == 5
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [(e["done"], e["total"]) for e in events if e["event"] == "encode"] == [(0, 5), (2, 5), (4, 5), (5, 5)]


def test_distill_encode_bar_on_a_terminal(tmp_path):
    from types import SimpleNamespace

    from diffcli.distill.events import TrainEvents
    from diffcli.training.distill.data import build_bank

    console, buf = _terminal()
    events = TrainEvents(RichReporter(console=console, stdout_is_terminal=True), rich=True)
    seen = []
    original = events.count

    def spy(event, done, total, label):
        original(event, done, total, label)
        seen.append((label, done, total, events.counter is not None))

    events.count = spy
    build_bank(_folder_plan(tmp_path, 3), SimpleNamespace(vae=_fake_vae()), "cpu", events, chunk=2)
    # a bar while it runs, gone (transient) when the last image is encoded
    assert seen == [("encode images", 0, 3, True), ("encode images", 2, 3, True), ("encode images", 3, 3, False)]
    assert "encode images=3" in buf.getvalue()
    events.close()


def test_a_batch_shows_its_job_and_one_summary_at_the_end():
    console, buf = _terminal()
    r = RichReporter(console=console, stdout_is_terminal=True)
    r.emit("batch_start", jobs=2, total_jobs=2, shard="0/1")
    for k in (1, 2):
        r.emit("job", line=k, job=k, jobs=2, key="x")
        r.start("txt2img", 1, 2)
        r.begin_batch(1, 1, 2)
        assert "job" in r._describe("denoise") and f"job {k}/2" in r._describe("denoise")
        r.step(1, 2)
        r.saved(f"out/{k}.png", k, 1)
        r.done(images=1, total_s=0.5)
    r.emit("batch_done", jobs_done=2, jobs_skipped=1, jobs_failed=0, total_s=2.0)
    text = buf.getvalue()
    assert "2 jobs done, 1 skipped (finished before), 0 failed: 2 images in 2.0 s (1.00 images/s) → out/" in text
    assert "1 image in" not in text  # no per-job summaries inside a batch

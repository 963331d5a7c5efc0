from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time

import pytest
from PIL import Image

from diffcli.errors import RuntimeFailure, UsageError
from diffcli.output import plan_paths, release_reservations, sanitize, save_atomic


def test_sanitize_never_yields_a_path():
    for text in ["../../x", "/etc/passwd", "a/b\\c", "..", "", "   ", "名前"]:
        name = sanitize(text)
        assert "/" not in name and "\\" not in name and not name.startswith(".") and name


def test_default_names_count_up_in_a_directory(tmp_path):
    values = [{"seed": 1, "prompt": "a cat"}, {"seed": 2, "prompt": "a cat"}]
    paths, fmt = plan_paths(str(tmp_path), None, values, overwrite=False)
    assert [p.name for p in paths] == ["00000-1-a_cat.png", "00001-2-a_cat.png"] and fmt == "PNG"
    paths[1].write_bytes(b"x")
    again, _ = plan_paths(str(tmp_path), None, values[:1], overwrite=False)
    assert again[0].name == "00002-1-a_cat.png"


def test_file_name_templates_and_formats(tmp_path):
    paths, fmt = plan_paths(
        str(tmp_path / "shots" / "{seed}-{prompt}.jpg"), None, [{"seed": 3, "prompt": "x y"}], False
    )
    assert paths[0] == tmp_path / "shots" / "3-x_y.jpg" and fmt == "JPEG"
    paths, _ = plan_paths(str(tmp_path / "one.webp"), None, [{"seed": 1}, {"seed": 2}], False)
    assert [p.name for p in paths] == ["one-1.webp", "one-2.webp"]
    with pytest.raises(UsageError):
        plan_paths(str(tmp_path / "a.png"), "jpg", [{"seed": 1}], False)
    with pytest.raises(UsageError):
        plan_paths(str(tmp_path / "{model}.png"), None, [{"seed": 1, "model": "m"}, {"seed": 2, "model": "m"}], False)


def test_atomic_save_failure_leaves_nothing(tmp_path):
    img = Image.new("I;16", (4, 4))  # JPEG cannot hold 16-bit: the encoder fails mid-write
    with pytest.raises(RuntimeFailure):
        save_atomic(img, tmp_path / "x.jpg", "JPEG", {}, overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_an_rgba_image_is_written_as_jpeg_on_white(tmp_path):
    """Qwen-Image 2.1's VAE makes RGBA images: PNG keeps the alpha, JPEG (which has none) gets it on white."""
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    save_atomic(img, tmp_path / "x.png", "PNG", {}, overwrite=False)
    save_atomic(img, tmp_path / "x.jpg", "JPEG", {}, overwrite=False)
    assert Image.open(tmp_path / "x.png").mode == "RGBA"
    with Image.open(tmp_path / "x.jpg") as jpg:
        assert jpg.mode == "RGB" and min(jpg.getpixel((4, 4))) >= 250  # transparent black: white


def test_a_planted_temp_symlink_is_never_written_through(tmp_path):
    """Today's guessable temp name (.NAME.PID.tmp) must not redirect the write to a victim file."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    target = out / "00000-9-x.png"
    for name in (f".{target.name}.{os.getpid()}.tmp", f".{target.name}.tmp"):
        (out / name).symlink_to(victim)
    save_atomic(Image.new("RGB", (4, 4)), target, "PNG", {}, overwrite=False)
    assert victim.read_text() == "precious"
    assert target.is_file() and not target.is_symlink()


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_symlink_at_the_final_name_is_never_followed(tmp_path, overwrite):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "x.png"
    target.symlink_to(victim)
    if overwrite:  # the link itself is replaced by the image; its target is untouched
        save_atomic(Image.new("RGB", (4, 4)), target, "PNG", {}, overwrite=True)
        assert not target.is_symlink() and Image.open(target).size == (4, 4)
    else:
        with pytest.raises(UsageError, match="already exists"):
            plan_paths(str(target), None, [{"seed": 1}], overwrite=False)
        with pytest.raises(RuntimeFailure, match="appeared"):
            save_atomic(Image.new("RGB", (4, 4)), target, "PNG", {}, overwrite=False)
    assert victim.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def _plan_in_child(directory: str, start, queue) -> None:
    start.wait()
    try:
        paths, _ = plan_paths(directory, None, [{"seed": 7, "prompt": "x"}] * 2, overwrite=False)
        queue.put([p.name for p in paths])
        time.sleep(1.0)  # still generating while the others plan
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        queue.put(repr(exc))


def test_concurrent_runs_into_one_directory_get_distinct_indices(tmp_path):
    ctx = multiprocessing.get_context("fork")
    start, queue = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_plan_in_child, args=(str(tmp_path), start, queue)) for _ in range(5)]
    for p in procs:
        p.start()
    start.set()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(isinstance(r, list) for r in results), results
    indices = [name.split("-")[0] for names in results for name in names]
    assert len(set(indices)) == 10, results


def test_a_killed_runs_reservation_is_reclaimed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f".diffcli-{int(dead.stdout)}-abc.reserved").write_text('["00000-1-x.png", "00001-1-x.png"]')
    paths, _ = plan_paths(str(tmp_path), None, [{"seed": 1, "prompt": "x"}], overwrite=False)
    assert paths[0].name == "00000-1-x.png"
    release_reservations()
    assert list(tmp_path.iterdir()) == []


def test_huge_template_widths_are_refused(tmp_path):
    with pytest.raises(UsageError, match="wider than"):
        plan_paths(str(tmp_path / "{seed:>99999999999}.png"), None, [{"seed": 1}], overwrite=False)

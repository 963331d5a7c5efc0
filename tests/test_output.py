from __future__ import annotations

import pytest
from PIL import Image

from diffcli.errors import RuntimeFailure, UsageError
from diffcli.output import plan_paths, sanitize, save_atomic


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
    paths, fmt = plan_paths(str(tmp_path / "shots" / "{seed}-{prompt}.jpg"), None, [{"seed": 3, "prompt": "x y"}], False)
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

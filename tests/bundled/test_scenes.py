import random

import numpy as np
import pytest

from diffcli.bundled import scenes
from diffcli.bundled.scenes import caption, parse_prompt, render, sample_scene


def test_attribute_lists():
    assert len(scenes.TIMES) == 4 and len(scenes.GROUNDS) == 4
    assert len(scenes.COLORS) >= 6 and set(scenes.POSITIONS) == {"left", "center", "right"}
    assert {"castle", "house", "tree", "lighthouse", "mountain"} <= set(scenes.OBJECTS)


def test_sample_scene_deterministic_and_fixed():
    a, b = sample_scene(random.Random(5)), sample_scene(random.Random(5))
    assert a == b
    assert sample_scene(random.Random(6)) != a
    s = sample_scene(1, time="dusk", obj="castle")
    assert (s.time, s.obj) == ("dusk", "castle")
    with pytest.raises(ValueError):
        sample_scene(1, obj="dragon")


def test_render_deterministic():
    s = sample_scene(3)
    a, b = np.asarray(render(s)), np.asarray(render(s))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    other = np.asarray(render(sample_scene(4)))
    assert not np.array_equal(a, other)


@pytest.mark.parametrize("size", [32, 100, (96, 48), 256])
def test_render_any_resolution(size):
    s = sample_scene(11, time="day", ground="grass", obj="house", color="red", position="center")
    im = render(s, size)
    w, h = (size, size) if isinstance(size, int) else size
    assert im.mode == "RGB" and im.size == (w, h)
    a = np.asarray(im).astype(int)
    # sky above, ground below, a red object in the middle
    assert a[1, w // 2, 2] > a[1, w // 2, 0]  # blue-ish day sky
    box = a[int(h * 0.55) : int(h * 0.8), int(w * 0.3) : int(w * 0.7)]
    red = (box[..., 0] > 150) & (box[..., 1] < 90) & (box[..., 2] < 90)
    assert red.mean() > 0.25, red.mean()


def test_render_scales_consistently():
    s = sample_scene(21)
    small = np.asarray(render(s, 64)).astype(float)
    big = np.asarray(render(s, 256).resize((64, 64))).astype(float)
    assert np.abs(small - big).mean() < 12


def test_time_and_position_visible():
    night = np.asarray(render(sample_scene(1, time="night"))).astype(int)
    day = np.asarray(render(sample_scene(1, time="day"))).astype(int)
    assert night[:10].mean() < 60 < day[:10].mean()
    centers = {}
    for pos in ("left", "center", "right"):
        s = sample_scene(2, time="day", ground="snow", obj="tree", color="red", position=pos)
        a = np.asarray(render(s)).astype(int)
        red = (a[..., 0] > 150) & (a[..., 1] < 90)
        assert red.sum() > 50
        centers[pos] = np.nonzero(red)[1].mean()
    assert centers["left"] < 24 < centers["center"] < 40 < centers["right"], centers


def test_caption_parse_round_trip():
    rng = random.Random(0)
    for _ in range(500):
        s = sample_scene(rng)
        text = caption(s, rng, drop_prob=0.3)
        stated, unknown = parse_prompt(text)
        assert unknown == [], text
        for k, v in stated.items():
            assert getattr(s, k) == v, (text, k)


def test_caption_states_everything_without_dropout():
    rng = random.Random(1)
    for _ in range(200):
        s = sample_scene(rng)
        stated, _ = parse_prompt(caption(s, rng, drop_prob=0.0))
        assert stated == s.attrs()


def test_captions_vary():
    rng = random.Random(2)
    s = sample_scene(rng)
    assert len({caption(s, rng) for _ in range(50)}) > 10


@pytest.mark.parametrize(
    "text,expected",
    [
        ("castle at dusk", {"obj": "castle", "time": "dusk"}),
        (
            "red house on the left, snowy ground, at night",
            {"color": "red", "obj": "house", "position": "left", "ground": "snow", "time": "night"},
        ),
        ("night. lighthouse. sea.", {"time": "night", "obj": "lighthouse", "ground": "sea"}),
        (
            "A Violet Cottage in the desert at sunrise, centered",
            {"color": "purple", "obj": "house", "ground": "sand", "time": "dawn", "position": "center"},
        ),
    ],
)
def test_parse_prompt_examples(text, expected):
    stated, unknown = parse_prompt(text)
    assert stated == expected and unknown == []


def test_parse_prompt_unknown_words():
    stated, unknown = parse_prompt("a purple dragon near the castle, 4k")
    assert stated == {"color": "purple", "obj": "castle"}
    assert unknown == ["dragon", "k"]

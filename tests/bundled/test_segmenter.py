"""The bundled scene segmenter (the measure of the ControlNet bench, and `--control-preprocess seg`)."""

import random

import numpy as np

from diffcli.bundled import scenes
from diffcli.bundled.segmenter import iou, load_segmenter

from helpers import cli, written


def test_iou_counts_overlap():
    a = np.zeros((1, 4, 4))
    b = np.zeros((1, 4, 4))
    a[0, :2] = 1  # 8 pixels
    b[0, 1:3] = 1  # 8 pixels, 4 shared
    assert iou(a, b)[0] == 4 / 12 and iou(a, a)[0] == 1.0


def test_segmenter_finds_the_object_in_held_out_renders():
    rng = random.Random(31337)
    sc = [scenes.sample_scene(rng) for _ in range(48)]
    masks = load_segmenter().masks([scenes.render(s) for s in sc])
    assert iou(masks, np.stack([scenes.object_mask(s) for s in sc])).mean() >= 0.9


def test_control_preprocess_seg_writes_the_silhouette(tmp_path):
    scene = scenes.sample_scene(random.Random(8), obj="castle", position="right")
    scenes.render(scene).save(tmp_path / "scene.png")
    r = cli("control", "preprocess", tmp_path / "scene.png", "--kind", "seg", "-o", tmp_path / "map.png")
    assert r.exit_code == 0, r.stderr
    from PIL import Image

    made = np.asarray(Image.open(written(r)[0]).convert("L")) / 255.0
    assert set(np.unique(made)) <= {0.0, 1.0}
    assert iou(made[None], scenes.object_mask(scene)[None])[0] >= 0.8

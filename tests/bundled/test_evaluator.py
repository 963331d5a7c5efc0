import random

import numpy as np
import pytest

from diffcli.bundled import scenes
from diffcli.bundled.evaluator import frechet_distance, load_evaluator
from diffcli.training.evaluator import heldout_accuracy


@pytest.fixture(scope="module")
def ev():
    return load_evaluator()


def test_heldout_accuracy(ev):
    acc = heldout_accuracy(ev, n=100, seed=31337)
    assert all(v >= 0.95 for v in acc.values()), acc


def test_predict_any_size(ev):
    s = scenes.sample_scene(5, time="night", ground="snow", obj="lighthouse", color="red", position="left")
    preds = ev.predict([scenes.render(s, 64), scenes.render(s, 200)])
    assert preds[0] == s.attrs() and preds[1] == s.attrs()


def test_features_and_frechet(ev):
    rng = random.Random(1)
    a = [scenes.render(scenes.sample_scene(rng)) for _ in range(60)]
    b = [scenes.render(scenes.sample_scene(rng)) for _ in range(60)]
    night = [scenes.render(scenes.sample_scene(rng, time="night", ground="snow", obj="castle")) for _ in range(60)]
    fa, fb, fn = ev.features(a), ev.features(b), ev.features(night)
    assert fa.shape[0] == 60 and fa.ndim == 2
    assert abs(frechet_distance(fa, fa)) < 1e-3 * max(1.0, np.trace(np.cov(fa, rowvar=False)))
    assert frechet_distance(fa, fn) > 2 * frechet_distance(fa, fb)


def test_score(ev):
    rng = random.Random(2)
    specs = [scenes.sample_scene(rng) for _ in range(40)]
    imgs = [scenes.render(s) for s in specs]
    prompts = [scenes.caption(s, rng) for s in specs]
    res = ev.score(prompts, imgs)
    assert res["adherence"] >= 0.95 and res["n"] == 40
    # wrong images for the prompts: adherence must drop
    bad = ev.score(prompts, imgs[1:] + imgs[:1])
    assert bad["adherence"] < 0.5 and bad["fd"] >= 0

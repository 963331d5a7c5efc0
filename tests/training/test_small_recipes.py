"""Entry points of the recipes that have no test of their own: the scene segmenter, the attribute
evaluator and the bundled ControlNet, each for a step or two, written where the runtime loads them from."""

import json

import numpy as np
import torch

from diffcli.bundled.evaluator import load_evaluator
from diffcli.bundled.segmenter import load_segmenter


def test_segmenter_recipe_writes_weights_the_runtime_loads(tmp_path):
    from diffcli.training import segmenter

    segmenter.train(steps=2, n=8, batch=4, out=tmp_path, log=lambda *_: None)
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 2
    assert load_segmenter(tmp_path).masks([np.zeros((64, 64, 3), np.uint8)]).shape == (1, 64, 64)


def test_evaluator_recipe_writes_weights_the_runtime_loads(tmp_path):
    from diffcli.training import evaluator

    evaluator.train(steps=2, n=8, batch=4, out=tmp_path, log=lambda *_: None)
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 2
    acc = evaluator.heldout_accuracy(load_evaluator(tmp_path), n=4)
    assert set(acc) == set(evaluator.HEADS)


def test_controlnet_recipe_exports_a_controlnet(tmp_path):
    from diffusers import ControlNetModel

    from diffcli.training import controlnet

    out = tmp_path / "cn"
    controlnet.main(
        [
            "--out",
            str(out),
            "--ckpt-dir",
            str(tmp_path / "ckpt"),
            "--steps",
            "1",
            "--buffer",
            "4",
            "--batch",
            "2",
            "--threads",
            "1",
        ]
    )
    meta = json.loads((out / "diffcli.json").read_text())
    assert meta["recipe"] == "python -m diffcli.training.controlnet" and meta["steps"] == 1
    assert ControlNetModel.from_pretrained(str(out)).config.conditioning_embedding_out_channels == [16, 32, 64]
    assert torch.load(tmp_path / "ckpt" / "control.pt", weights_only=False)["step"] == 1

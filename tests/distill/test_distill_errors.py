"""Bad input fails with exit 2 and one clear line, before any weights are loaded or training starts."""

import json
import sys

import pytest

import builders
from helpers import cli


def _fails(*args, match: str):
    result = cli("distill", *args)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert match in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1  # one line
    return result


@pytest.fixture
def no_torch_training(monkeypatch):
    """Any attempt to train fails the test: errors must come first."""
    from diffcli.training.distill import trainer

    def boom(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(trainer, "train", boom)
    monkeypatch.setattr(trainer, "make_accelerator", boom)


def test_inpainting_teacher_is_refused(tiny_inpaint, photos, tmp_path, no_torch_training):
    _fails("--teacher", tiny_inpaint, "--data", photos, "--out", tmp_path / "s", match="inpainting model (9-channel")


def test_empty_data_folder(fast_sd, tmp_path, no_torch_training):
    (tmp_path / "empty").mkdir()
    _fails("--teacher", fast_sd, "--data", tmp_path / "empty", "--out", tmp_path / "s", match="no images found")


def test_image_without_caption(fast_sd, tmp_path, no_torch_training):
    data = builders.image_folder(tmp_path / "d", n=2)
    (data / "img1.txt").unlink()
    _fails("--teacher", fast_sd, "--data", data, "--out", tmp_path / "s", match="img1.png has no caption file img1.txt")


def test_missing_data_folder_and_prompts_file(fast_sd, tmp_path, no_torch_training):
    _fails("--teacher", fast_sd, "--data", tmp_path / "nope", "--out", tmp_path / "s", match="no such directory")
    _fails("--teacher", fast_sd, "--prompts", tmp_path / "nope.txt", "--out", tmp_path / "s", match="no such file")
    (tmp_path / "blank.txt").write_text("\n# only a comment\n")
    _fails("--teacher", fast_sd, "--prompts", tmp_path / "blank.txt", "--out", tmp_path / "s", match="no prompts")


@pytest.mark.skipif(sys.platform == "win32", reason="posix paths")
def test_unwritable_out(fast_sd, photos, tmp_path, no_torch_training):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where a directory must go: fails even for root
    _fails("--teacher", fast_sd, "--data", photos, "--out", blocker / "student", match="is not writable")
    _fails("--teacher", fast_sd, "--data", photos, "--out", blocker, match="is a file")


def test_out_holding_another_model_needs_overwrite(fast_sd, tiny_sd, photos, tmp_path, no_torch_training):
    import shutil

    out = tmp_path / "taken"
    shutil.copytree(tiny_sd, out)
    _fails("--teacher", fast_sd, "--data", photos, "--out", out, match="already holds a different model")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    _fails("--teacher", fast_sd, "--data", photos, "--out", tmp_path / "junk", match="already holds other files")


def test_flag_errors(fast_sd, photos, tmp_path, no_torch_training):
    out = tmp_path / "s"
    _fails("--teacher", fast_sd, "--data", photos, match="missing --out")
    _fails("--teacher", fast_sd, "--data", photos, "--prompts", photos, "--out", out, match="not both")
    _fails("--teacher", fast_sd, "--data", photos, "--out", out, "--method", "progressive", match="planned")
    _fails("--teacher", fast_sd, "--out", out, match="give training data with --data")
    _fails("--teacher", fast_sd, "--data", photos, "--out", out, "--guidance", "0.5", match="--guidance")
    _fails("--teacher", fast_sd, "--data", photos, "--out", out, "--cfg-cutoff", "1", match="--cfg-cutoff")
    _fails("--teacher", fast_sd, "--data", photos, "--out", out, "--mixed-precision", "fp8", match="mixed-precision")
    _fails("--teacher", fast_sd, "--data", photos, "--out", out, "--max-train-steps", "0", match="at least 1")
    _fails("--teacher", tmp_path / "missing-model", "--data", photos, "--out", out, match="missing-model")
    _fails("--report", tmp_path, match="not a student")
    _fails(
        "--teacher",
        fast_sd,
        "--data",
        photos,
        "--out",
        out,
        "--mixed-precision",
        "fp16",
        "--device",
        "cpu",
        match="fp16 needs a GPU",
    )
    _fails("--teacher", fast_sd, "--data", photos, "--out", out, "--device", "mps", match="cpu or cuda")
    _fails("--teacher", fast_sd, "--data", photos, "--out", out, "--fuse", match="--fuse is for")
    _fails("--teacher", fast_sd, "--data", photos, "--out", out, "--student-unet", "small", match="full or compact")
    _fails(
        "--teacher",
        fast_sd,
        "--data",
        photos,
        "--out",
        out,
        "--method",
        "lcm-lora",
        "--student-vae",
        "tiny",
        match="--student-vae is for --method lcm",
    )
    _fails(
        "--teacher",
        fast_sd,
        "--data",
        photos,
        "--out",
        out,
        "--student-vae",
        "tiny",
        match="bundled model's tiny autoencoder",
    )
    _fails(
        "--teacher",
        fast_sd,
        "--data",
        photos,
        "--out",
        out,
        "--student-vae",
        photos,
        match="not an autoencoder directory",
    )
    _fails(
        "--teacher",
        "tiny",
        "--out",
        out,
        "--kd-steps",
        "10",
        "--max-train-steps",
        "10",
        match="leaves no consistency steps",
    )
    assert not out.exists()  # nothing written by a refused run


def test_existing_run_needs_resume_and_same_settings(fast_sd, photos, tmp_path, no_torch_training):
    from diffcli.distill.preflight import plan, run_fingerprint
    from diffcli.distill.runner import config_from_flags
    from diffcli.training.distill.checkpoint import write_run

    out = tmp_path / "s"
    p = plan(config_from_flags({"teacher": str(fast_sd), "data": str(photos), "out": str(out)}))
    write_run(p.ckpt, p.config, run_fingerprint(p.config))
    _fails("--teacher", fast_sd, "--data", photos, "--out", out, match="pass --resume to continue")
    _fails(
        "--teacher",
        fast_sd,
        "--data",
        photos,
        "--out",
        out,
        "--resume",
        "--batch-size",
        "3",
        match="settings differ from the run",
    )
    saved = json.loads((p.ckpt / "run.json").read_text())["config"]
    assert saved["batch_size"] == 8 and saved["max_train_steps"] == 4000  # defaults filled in and recorded

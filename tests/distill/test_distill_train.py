"""End to end on the tiny fixture teacher: distill, load the student, resume, interrupt, LoRA + report."""

import json
import shutil

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from diffcli.training.distill import trainer

from helpers import cli, pixels, written

COMMON = ["--batch-size", "2", "--checkpoint-every", "1", "--seed", "3"]


def _events(result) -> list[dict]:
    return [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]


def _ok(result):
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr[-2000:])
    return result


def test_distill_load_resume_exactly(fast_sd, photos, tmp_path):
    out = tmp_path / "student"
    args = ["distill", "--teacher", fast_sd, "--data", photos, "--out", out, *COMMON, "--no-report", "--json"]
    r = _ok(cli(*args, "--max-train-steps", "2"))
    assert written(r) == [out]
    ev = _events(r)
    assert [e["step"] for e in ev if e["event"] == "train"] == [1, 2]
    assert [e["step"] for e in ev if e["event"] == "checkpoint"] == [1, 2]

    # a diffusers directory with an LCM scheduler, an fp16 w-conditioned UNet and recommended defaults
    own = json.loads((out / "diffcli.json").read_text())
    assert own["steps"] == 4 and own["scheduler"] == "lcm" and own["width"] == 32
    assert own["distilled_from"]["method"] == "lcm" and own["distilled_from"]["steps"] == 2
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["_class_name"] == "LCMScheduler"
    unet_cfg = json.loads((out / "unet" / "config.json").read_text())
    assert unet_cfg["time_cond_proj_dim"] == 256
    weights = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(v.dtype == torch.float16 for v in weights.values())

    # `--model DIR` works with the student's own defaults (4 LCM steps)
    g = _ok(cli("txt2img", "a red castle", "--model", out, "--seed", "1", "--out", tmp_path / "img.png", "--json"))
    start = next(e for e in _events(g) if e["event"] == "start")
    assert start["steps"] == 4
    image = json.loads(g.stdout.splitlines()[0])
    assert image["width"] == 32 and (tmp_path / "img.png").is_file()

    # --resume continues from step 2 with the run's own settings, to exactly step 3
    r = _ok(cli("distill", "--out", out, "--resume", "--max-train-steps", "3", "--json"))
    ev = _events(r)
    assert [e["step"] for e in ev if e["event"] == "train"] == [3]
    assert any("at step 2" in e.get("message", "") for e in ev if e["event"] == "info")
    ckpt = out.parent / "student.distill"
    state = torch.load(ckpt / "checkpoint-0000003" / "state.pt", weights_only=False)
    assert state["step"] == 3
    assert json.loads((out / "diffcli.json").read_text())["distilled_from"]["steps"] == 3
    assert sorted(p.name for p in ckpt.glob("checkpoint-*")) == ["checkpoint-0000002", "checkpoint-0000003"]

    # same weights as one uninterrupted 3-step run: nothing lost or repeated across the resume
    straight = tmp_path / "straight"
    _ok(
        cli(
            "distill",
            "--teacher",
            fast_sd,
            "--data",
            photos,
            "--out",
            straight,
            *COMMON,
            "--no-report",
            "--max-train-steps",
            "3",
            "--quiet",
        )
    )
    other = torch.load(straight.parent / "straight.distill" / "checkpoint-0000003" / "state.pt", weights_only=False)
    for key in ("student", "target"):
        for name, value in state[key].items():
            assert torch.allclose(value, other[key][name], atol=1e-5), (key, name)


class _StopAtOnce(trainer.StopFlag):
    """As if Ctrl-C was pressed during the first step."""

    def __enter__(self):
        self.set = True
        return self


def test_ctrl_c_checkpoints_then_resume(fast_sd, photos, tmp_path, monkeypatch):
    out = tmp_path / "s"
    args = [
        "distill",
        "--teacher",
        fast_sd,
        "--data",
        photos,
        "--out",
        out,
        "--batch-size",
        "2",
        "--checkpoint-every",
        "100",
        "--max-train-steps",
        "2",
        "--no-report",
        "--json",
    ]
    monkeypatch.setattr(trainer, "StopFlag", _StopAtOnce)
    r = cli(*args)
    assert r.exit_code == 130, r.stderr[-2000:]
    ckpt = tmp_path / "s.distill"
    assert [p.name for p in ckpt.glob("checkpoint-*")] == ["checkpoint-0000001"]  # the step was not lost
    assert not (out / "model_index.json").exists()
    monkeypatch.undo()
    r = _ok(cli("distill", "--out", out, "--resume", "--json"))
    assert [e["step"] for e in _events(r) if e["event"] == "train"] == [2]
    assert (out / "model_index.json").is_file()


def test_lcm_lora_from_prompts_with_report(fast_sd, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red castle\n# comment\na house at dusk\n")
    out = tmp_path / "lora"
    r = _ok(
        cli(
            "distill",
            "--teacher",
            fast_sd,
            "--prompts",
            prompts,
            "--out",
            out,
            "--method",
            "lcm-lora",
            "--lora-rank",
            "4",
            "--max-train-steps",
            "1",
            "--batch-size",
            "2",
            "--report-n",
            "3",
            "--fuse",
            "--json",
        )
    )
    data = tmp_path / "lora.distill" / "data"
    assert sorted(p.name for p in data.iterdir()) == [
        "000000.png",
        "000000.txt",
        "000001.png",
        "000001.txt",
        "meta.json",
    ]
    assert (data / "000001.txt").read_text().strip() == "a house at dusk"
    own = json.loads((out / "diffcli.json").read_text())
    assert own["cfg"] == 1.0 and own["lora"]["base_path"] == str(fast_sd) and own["lora"]["rank"] == 4
    assert own["shift"] == 1.0  # only the bundled teacher's lcm student has a measured shift
    lora = load_file(str(out / "pytorch_lora_weights.safetensors"))
    assert lora and all(v.dtype == torch.float16 for v in lora.values())
    # --fuse: the base with the LoRA fused in sits next to it, so `--model OUT` works as is
    fused = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    assert not any("lora" in k for k in fused)
    g = _ok(cli("txt2img", "a tree", "--model", out, "--seed", "1", "--out", tmp_path / "l.png", "--json"))
    assert next(e for e in _events(g) if e["event"] == "start")["steps"] == 4
    rep = json.loads((out / "report.json").read_text())
    assert [(row["model"], row["steps"]) for row in rep["rows"]] == [
        ("teacher", 2),
        ("student", 1),
        ("student", 2),
        ("student", 4),
        ("student", 8),
    ]
    assert all(row["sec_per_image"] > 0 for row in rep["rows"])
    assert "| student | 4 |" in (out / "report.md").read_text() and (out / "report.png").is_file()
    assert any(e["event"] == "report_row" for e in _events(r))

    from diffcli.distill.student import is_lora_dir, load_student

    assert is_lora_dir(out)
    pipe = load_student(out)
    # every trained layer comes back (attention layers were once lost to a key-name round trip)
    assert sum(1 for _, m in pipe.unet.named_modules() if hasattr(m, "lora_A")) == len(lora) // 2
    assert pipe("a tree", num_inference_steps=2, guidance_scale=1.0, output_type="np").images.shape == (1, 32, 32, 3)

    # the LoRA alone (no fused copy): `--model` loads its base, fuses the LoRA in and uses the LoRA's defaults
    only = tmp_path / "lora-only"
    only.mkdir()
    for name in ("pytorch_lora_weights.safetensors", "diffcli.json"):
        shutil.copy2(out / name, only / name)
    g = _ok(
        cli(
            "txt2img",
            "a tree",
            "--model",
            only,
            "--seed",
            "1",
            "--out",
            tmp_path / "only.png",
            "--json",
            "--dtype",
            "float32",
        )
    )
    image = Image.open(tmp_path / "only.png")
    record = json.loads(image.info["diffcli"])
    assert (record["job"]["steps"], record["job"]["cfg"], record["job"]["scheduler"]) == (4, 1.0, "lcm")
    assert record["job"]["model"] == str(only) and record["model"]["lora"]["path"] == str(only)
    assert "Lora hashes: " in image.info["parameters"]
    from diffusers import DiffusionPipeline, LCMScheduler

    plain = DiffusionPipeline.from_pretrained(str(fast_sd), torch_dtype=torch.float32)
    plain.load_lora_weights(str(only), weight_name="pytorch_lora_weights.safetensors")
    plain.fuse_lora()
    plain.scheduler = LCMScheduler.from_config(plain.scheduler.config)
    expected = plain(
        "a tree",
        num_inference_steps=4,
        guidance_scale=1.0,
        width=32,
        height=32,
        generator=torch.Generator("cpu").manual_seed(1),
    ).images[0]
    assert np.array_equal(pixels(tmp_path / "only.png"), np.asarray(expected, dtype=np.int16))
    listed = cli("models", "list", "--json")
    assert listed.exit_code == 0 and str(only) in listed.stdout and '"lora"' in listed.stdout
    # a LoRA whose base is gone: one clear line, no traceback
    own = json.loads((only / "diffcli.json").read_text())
    own["lora"].update(base=str(tmp_path / "gone"), base_path=str(tmp_path / "gone"), base_source="local")
    (only / "diffcli.json").write_text(json.dumps(own))
    bad = cli("txt2img", "a tree", "--model", only, "--out", tmp_path / "bad.png")
    assert bad.exit_code == 2 and "LoRA base model" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad.png").exists()


def test_sdxl_teacher(tiny_sdxl, photos, tmp_path):
    """SDXL-style teachers: pooled text and time ids reach teacher, student and target; LoRA saved XL-style."""
    import builders

    teacher = builders.fast_teacher(tiny_sdxl, tmp_path / "xl", scheduler="euler")
    out = tmp_path / "xl-lcm"
    _ok(
        cli(
            "distill",
            "--teacher",
            teacher,
            "--data",
            photos,
            "--out",
            out,
            "--max-train-steps",
            "1",
            "--batch-size",
            "2",
            "--no-report",
            "--quiet",
        )
    )
    assert (out / "text_encoder_2").is_dir() and (out / "tokenizer_2").is_dir()
    g = _ok(cli("txt2img", "a red castle", "--model", out, "--seed", "1", "--out", tmp_path / "xl.png", "--quiet"))
    assert (tmp_path / "xl.png").is_file(), g.stdout


def test_bundled_teacher_scenes_and_report(as_bundled, tmp_path):
    """The bundled teacher needs no data flags (scene generator); the report scores with the evaluator."""
    out = tmp_path / "tiny-lcm"
    r = _ok(
        cli(
            "distill",
            "--teacher",
            "tiny",
            "--out",
            out,
            "--num-samples",
            "16",
            "--batch-size",
            "4",
            "--max-train-steps",
            "3",
            "--kd-steps",
            "1",
            "--report-n",
            "4",
            "--json",
        )
    )
    ev = _events(r)
    assert next(e for e in ev if e["event"] == "phase" and e["phase"] == "data")["source"] == "scenes"
    own = json.loads((out / "diffcli.json").read_text())
    assert own["distilled_from"]["teacher"] == "tiny" and own["distilled_from"]["guidance"] == [2.0, 4.0]
    # the bundled teacher's default student: compact UNet (no mid block, no lowest down-level attention)
    # and the bundled tiny autoencoder in place of the teacher's VAE
    rec = own["distilled_from"]
    assert (rec["student_unet"], rec["student_vae"], rec["kd_steps"]) == ("compact", "tiny", 1)
    assert rec["cfg_cutoff"] == 0.3  # the teacher's own guidance cutoff shapes the targets
    # after the KD step the learning rate falls linearly toward 0 at the last step (1e-4, 1e-4, 5e-5)
    assert rec["lr_schedule"] == "linear"
    assert [e["lr"] for e in ev if e["event"] == "train"] == [1e-4, 1e-4, 5e-5]
    unet = json.loads((out / "unet" / "config.json").read_text())
    teacher_unet = json.loads((as_bundled / "unet" / "config.json").read_text())
    assert unet["mid_block_type"] is None and teacher_unet["mid_block_type"] == "UNetMidBlock2DCrossAttn"
    assert unet["down_block_types"][-1] == "DownBlock2D" and unet["up_block_types"] == teacher_unet["up_block_types"]
    assert json.loads((out / "model_index.json").read_text())["vae"] == ["diffusers", "AutoencoderTiny"]
    g = _ok(cli("txt2img", "a red castle", "--model", out, "--seed", "1", "--out", tmp_path / "s.png", "--quiet"))
    assert Image.open(tmp_path / "s.png").size == (64, 64), g.stdout
    assert own["cfg"] == 3.0 and own["width"] == 64  # the teacher's guidance (3) is the student's default
    assert own["shift"] == 0.5  # its steps move toward the clean end (diffcli.timesteps)
    assert json.loads(Image.open(tmp_path / "s.png").info["diffcli"])["job"]["shift"] == 0.5
    rep = json.loads((out / "report.json").read_text())
    assert [row["shift"] for row in rep["rows"]] == [1.0, 0.5, 0.5, 0.5, 0.5]
    assert rep["prompt_source"].startswith("held-out caption-grammar prompts")
    for row in rep["rows"]:
        assert 0 <= row["adherence"] <= 1 and row["fd"] >= 0 and set(row["accuracy"]) >= {"obj", "color"}
    assert set(rep["bars"]) >= {"adherence_ratio", "fd_ratio", "time_ratio", "adherence_ok", "fd_ok", "time_ok"}
    md = (out / "report.md").read_text()
    assert "4-step student vs teacher" in md and "Fréchet distance ratio" in md

    # on demand, again (fewer prompts): same files rewritten
    r = _ok(cli("distill", "--report", out, "--report-n", "3", "--json"))
    assert r.stdout.splitlines()[0] == str(out / "report.md")
    assert json.loads((out / "report.json").read_text())["prompts"] == 3

    # shipping it in the package (as tiny-lcm): no machine paths, readable by all, no report image
    from diffcli.training.ship_student import ship

    shipped = ship(out, tmp_path / "shipped")
    rec = json.loads((shipped / "diffcli.json").read_text())["distilled_from"]
    assert rec["teacher_path"] == "diffcli/bundled/tiny" and rec["run"] == own["distilled_from"]["run"]
    assert {f.stat().st_mode & 0o777 for f in shipped.rglob("*") if f.is_file()} == {0o644}
    assert '"_name_or_path"' in (out / "unet" / "config.json").read_text()  # diffusers wrote the path...
    assert not any("_name_or_path" in f.read_text() for f in shipped.glob("*/config.json"))  # ...shipped without
    assert (shipped / "report.json").is_file() and not (shipped / "report.png").exists()
    assert _ok(cli("txt2img", "a tree", "--model", shipped, "-o", tmp_path / "o.png", "-q")).stdout.strip()


def test_a_run_from_before_lr_schedule_resumes_at_its_constant_rate(as_bundled, tmp_path):
    """A run.json written before --lr-schedule existed (constant rate, no key) still resumes as it
    was, although today's default for the bundled teacher is linear."""
    out = tmp_path / "old"
    common = [
        "--teacher",
        "tiny",
        "--out",
        out,
        "--num-samples",
        "8",
        "--batch-size",
        "2",
        "--kd-steps",
        "1",
        "--no-report",
        "--json",
    ]
    _ok(cli("distill", *common, "--max-train-steps", "2", "--lr-schedule", "constant"))
    run = out.parent / "old.distill" / "run.json"
    data = json.loads(run.read_text())
    assert data["config"]["report_n"] == 2048  # the bundled teacher's report draws 2048 prompts by default
    assert data["config"].pop("lr_schedule") == "constant"
    run.write_text(json.dumps(data))
    r = _ok(cli("distill", *common, "--max-train-steps", "4", "--resume"))
    assert [(e["step"], e["lr"]) for e in _events(r) if e["event"] == "train"] == [(3, 1e-4), (4, 1e-4)]
    assert json.loads((out / "diffcli.json").read_text())["distilled_from"]["lr_schedule"] == "constant"

"""Writing the student, and reading it back.

lcm       a diffusers model directory: the teacher's VAE (or the --student-vae autoencoder), text
          encoder and tokenizer (copied as they are), the distilled UNet in fp16 safetensors, an
          LCMScheduler config, and diffcli.json with the recommended settings (4 steps, LCM sampler)
          and where it came from.
lcm-lora  pytorch_lora_weights.safetensors (diffusers LoRA format, fp16) + diffcli.json recording the
          base model (name, path, fingerprint) the LoRA belongs to.
Both are written to a temporary sibling folder and renamed into place.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from diffcli.distill.preflight import STUDENT_KEY
from diffcli.models.lora import LORA_FILE, apply_lora, is_lora_dir, lora_base, read_own  # noqa: F401
from diffcli.output import swap_in_dir

SKIP_COMPONENTS = ("unet", "scheduler")


def _record(plan, fingerprint: str, summary: dict) -> dict:
    from diffcli.models.fingerprint import fingerprint as model_hash

    cfg = plan.config
    try:
        teacher_hash = model_hash(str(plan.ref.path))
    except Exception:  # noqa: BLE001 - a hash is a nicety
        teacher_hash = None
    return {
        "teacher": plan.ref.name,
        "teacher_path": str(plan.ref.path),
        "teacher_source": plan.ref.source,
        "teacher_hash": teacher_hash,
        "teacher_defaults": plan.teacher_defaults,
        "method": cfg.method,
        "steps": summary.get("steps"),
        "guidance": list(cfg.guidance),
        "cfg_cutoff": cfg.cfg_cutoff,
        "num_ddim_timesteps": cfg.num_ddim_timesteps,
        "student_unet": cfg.student_unet,
        "student_vae": cfg.student_vae,
        "kd_steps": cfg.kd_steps,
        "learning_rate": cfg.learning_rate,
        "lr_schedule": cfg.lr_schedule,
        "data": plan.source,
        "run": fingerprint,
        "bundled_teacher": plan.bundled,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "train": summary,
    }


def _defaults(plan) -> dict:
    cfg = plan.config
    # lcm: the UNet is w-conditioned and never doubles the batch, so cfg only selects the guidance it
    # was taught (the teacher's own scale by default); lcm-lora bakes guidance in: cfg 1.
    cfg_default = round(sum(cfg.guidance) / 2, 3) if cfg.method == "lcm" else 1.0
    return {
        "steps": 4,
        "cfg": cfg_default,
        "scheduler": "lcm",
        "shift": cfg.shift,
        "width": cfg.resolution,
        "height": cfg.resolution,
        "family": plan.layout.family,
    }


def export(plan, pipe, student, target, fingerprint: str, summary: dict) -> Path:
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    out = plan.out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    own = {**_defaults(plan), STUDENT_KEY: _record(plan, fingerprint, summary)}
    if plan.config.method == "lcm-lora":
        _write_lora(tmp, student, type(pipe))
        own["lora"] = {
            "base": plan.ref.name,
            "base_source": plan.ref.source,
            "base_path": str(plan.ref.path),
            "base_hash": own[STUDENT_KEY]["teacher_hash"],
            "file": LORA_FILE,
            "rank": plan.config.lora_rank,
        }
        if plan.config.fuse:  # a full model too, so `--model OUT` loads it with no LoRA support needed
            fused = _fused_pipeline(plan.ref.path, tmp)
            _write_model(tmp, plan, fused, fused.unet)
    else:
        _write_model(tmp, plan, pipe, target if target is not None else student)
    (tmp / "diffcli.json").write_text(json.dumps(own, indent=2) + "\n")
    same_run = (read_own(out).get(STUDENT_KEY) or {}).get("run") == fingerprint
    for extra in ("report.json", "report.md", "report.png") if same_run else ():  # an earlier report of this run
        if (out / extra).is_file():
            shutil.copy2(out / extra, tmp / extra)
    swap_in_dir(tmp, out)
    return out


def _write_model(tmp: Path, plan, pipe, unet) -> None:
    teacher = Path(plan.ref.path)
    index = json.loads((teacher / "model_index.json").read_text())
    for name, value in index.items():
        if name.startswith("_") or name in SKIP_COMPONENTS or not isinstance(value, list) or value[0] is None:
            continue
        if name == "vae" and plan.student_vae is not None:
            shutil.copytree(plan.student_vae, tmp / name)
            index[name] = ["diffusers", json.loads((plan.student_vae / "config.json").read_text())["_class_name"]]
        elif (teacher / name).is_dir():
            shutil.copytree(teacher / name, tmp / name)
    unet16 = _copy_unet(unet).to(torch.float16)
    unet16.save_pretrained(tmp / "unet", safe_serialization=True)
    lcm_scheduler(pipe.scheduler.config, plan.config.num_ddim_timesteps).save_pretrained(tmp / "scheduler")
    index["scheduler"] = ["diffusers", "LCMScheduler"]
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def lcm_scheduler(teacher_config, original_steps: int):
    """An LCMScheduler on the teacher's noise schedule, keeping only the keys LCMScheduler takes (a
    DPM teacher's solver keys would be saved along and reported as unexpected on every load)."""
    import inspect

    from diffusers import LCMScheduler

    takes = set(inspect.signature(LCMScheduler.__init__).parameters)
    base = {k: v for k, v in dict(teacher_config).items() if k in takes}
    return LCMScheduler.from_config(base, original_inference_steps=original_steps)


def _fused_pipeline(base_path, lora_dir):
    from diffusers import DiffusionPipeline

    from diffcli.distill.components import from_pretrained

    pipe = from_pretrained(DiffusionPipeline, base_path)
    apply_lora(pipe, lora_dir, fuse=True)
    pipe.unload_lora_weights()  # keeps the fused weights, drops the adapter layers
    return pipe


def _copy_unet(unet):
    from diffusers import UNet2DConditionModel

    copy = UNet2DConditionModel.from_config(unet.config)
    copy.load_state_dict(unet.state_dict())
    return copy.eval()


def _write_lora(tmp: Path, unet, pipeline_cls) -> None:
    from peft.utils import get_peft_model_state_dict

    # peft key names (lora_A / lora_B), which load_lora_weights maps back one to one; the older
    # diffusers names (lora.down / lora.up) lost attention layers on the way back in
    layers = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    pipeline_cls.save_lora_weights(str(tmp), unet_lora_layers=layers, safe_serialization=True)
    (tmp / LORA_FILE).chmod(0o644)


# ------------------------------------------------------------------ reading back
def load_student(path, device="cpu", dtype=torch.float32):
    """A ready pipeline for a student directory (model or LoRA), LCM sampler installed."""
    from diffusers import DiffusionPipeline

    from diffcli.distill.components import from_pretrained
    from diffcli.pipelines import prepare_libraries

    prepare_libraries()
    path = Path(path)
    if is_lora_dir(path):
        from diffcli.models import resolve

        base = resolve(lora_base(path), offline=True)
        pipe = from_pretrained(DiffusionPipeline, base.path, dtype)
        apply_lora(pipe, path)
        steps = (read_own(path).get(STUDENT_KEY) or {}).get("num_ddim_timesteps", 50)
        pipe.scheduler = lcm_scheduler(pipe.scheduler.config, steps)
    else:
        pipe = from_pretrained(DiffusionPipeline, path, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)

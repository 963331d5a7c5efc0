"""Everything checked before any weights are loaded: the teacher, the data, --out and resume state.

Bad input fails here with a UsageError (exit 2), before training starts.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from diffcli import families
from diffcli.distill.config import LEGACY_VALUES, NOT_IDENTIFYING, DistillConfig, default_report_n
from diffcli.errors import UsageError
from diffcli.models.lora import LORA_FILE

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
RUN_FILE = "run.json"
STUDENT_KEY = "distilled_from"  # key in a student's diffcli.json

KD_FRACTION = 0.5  # of --max-train-steps: knowledge distillation that starts a compact student's run
# The bundled teacher's lcm student samples its 4 steps at [999, 619, 339, 139] instead of the evenly
# spaced [999, 759, 499, 259]: chosen on prompts apart from the report's (docs/distill.md), it raised
# adherence by about 0.02 and lowered the Fréchet distance on every student tried.
BUNDLED_LCM_SHIFT = 0.5
# Per method: (steps, batch size, learning rate) for the bundled teacher and for any other teacher.
METHOD_DEFAULTS = {
    ("lcm", True): (1200, 24, 1e-4),
    ("lcm", False): (4000, 8, 1e-5),
    ("lcm-lora", True): (1500, 24, 5e-4),
    ("lcm-lora", False): (4000, 8, 1e-4),
}


@dataclass
class Plan:
    """The checked run: the settings with every default filled in and what the teacher is."""

    config: DistillConfig
    ref: object  # diffcli.models.ModelRef
    layout: object  # diffcli.models.layout.Layout
    source: str  # scenes | folder | prompts
    teacher_defaults: dict  # steps, cfg, scheduler, width, height
    items: list = field(default_factory=list)  # folder: [(image, caption)], prompts: [prompt]
    bundled: bool = False
    student_vae: Path | None = None  # an autoencoder directory the student ships instead of the teacher's VAE

    @property
    def ckpt(self) -> Path:
        return self.config.ckpt_path

    @property
    def out(self) -> Path:
        return self.config.out_path


def _teacher(config: DistillConfig):
    from diffcli.models import resolve
    from diffcli.models.layout import read_layout

    ref = resolve(config.teacher, offline=config.offline)
    if ref.kind != "diffusers":
        raise UsageError(
            f"{config.teacher}: distill needs a diffusers model directory as teacher, not a single file; "
            "convert it first"
        )
    layout = read_layout(ref.path)
    what = None
    if layout.is_upscaler:
        what = "an upscaler"
    elif layout.is_inpaint:
        what = f"an inpainting model ({layout.unet_in_channels}-channel UNet)"
    elif layout.is_flow:  # SD 3.x, FLUX.1: a transformer, a flow-matching schedule (docs/distill.md)
        what = (
            f"a {layout.family} model (flow-matching transformer), which distill does not support yet; "
            "it distills SD-1, SD-2 and SDXL-style models"
        )
    elif (
        layout.unet_in_channels != 4 or "Img2Img" in layout.pipeline_class or "InstructPix2Pix" in layout.pipeline_class
    ):
        what = f"not a text-to-image model ({layout.pipeline_class or 'unknown pipeline'})"
    elif families.get(layout.family) is None or not families.get(layout.family).takes("distill"):
        what = f"a {layout.family} model; distill supports SD-1, SD-2 and SDXL-style text-to-image models"
    if what:
        raise UsageError(f"{config.teacher}: teacher is {what}; distill needs a text-to-image model")
    return ref, layout


def check_folder(path: Path) -> list[tuple[Path, Path]]:
    """(image, caption) pairs of a --data folder; every image needs a same-name .txt caption."""
    if not path.exists():
        raise UsageError(f"--data {path}: no such directory")
    if not path.is_dir():
        raise UsageError(f"--data {path}: not a directory")
    images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXT and p.is_file())
    if not images:
        raise UsageError(f"--data {path}: no images found ({', '.join(IMAGE_EXT)}) with .txt captions")
    missing = [p for p in images if not p.with_suffix(".txt").is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UsageError(f"--data: image {missing[0]} has no caption file {missing[0].with_suffix('.txt').name}{more}")
    return [(p, p.with_suffix(".txt")) for p in images]


def check_prompts(path: Path) -> list[str]:
    if not path.is_file():
        raise UsageError(f"--prompts {path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--prompts {path}: cannot read ({exc})") from None
    prompts = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise UsageError(f"--prompts {path}: no prompts (one per line)")
    return prompts


def _probe_dir(directory: Path, flag: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".diffcli-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"{flag} {directory} is not writable: {exc.strerror or exc}") from None


def describe_dir(path: Path) -> str | None:
    """What PATH holds: None if absent or empty, else a short description."""
    if not path.exists():
        return None
    if not path.is_dir():
        return "a file"
    entries = [e for e in os.listdir(path) if not e.startswith(".diffcli-probe-")]
    if not entries:
        return None
    if (path / "model_index.json").is_file() or (path / LORA_FILE).is_file():
        return "a model"
    return "other files"


def student_record(path: Path) -> dict | None:
    try:
        return json.loads((path / "diffcli.json").read_text()).get(STUDENT_KEY)
    except (OSError, ValueError):
        return None


def read_run(ckpt: Path) -> DistillConfig | None:
    try:
        return DistillConfig.from_dict(json.loads((ckpt / RUN_FILE).read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_out(config: DistillConfig, fingerprint: str) -> None:
    out, ckpt = config.out_path, config.ckpt_path
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory")
    held = describe_dir(out)
    previous = read_run(ckpt)
    if not config.overwrite:
        if previous is not None:
            if not config.resume:
                raise UsageError(
                    f"a distillation run for {out} already exists ({ckpt}); pass --resume to continue "
                    "it or --overwrite to start over"
                )
            diff = previous.differences(config)
            if diff:
                raise UsageError(
                    f"--resume: settings differ from the run in {ckpt} ({', '.join(diff)}); "
                    "leave them out to reuse the run's, or --overwrite to start over"
                )
        if held and (student_record(out) or {}).get("run") != fingerprint:
            what = "a different model" if held == "a model" else "other files"
            raise UsageError(f"--out {out} already holds {what}; choose another directory or pass --overwrite")
    _probe_dir(out, "--out")
    _probe_dir(ckpt, "--checkpoint-dir")


def _fill_defaults(config: DistillConfig, bundled: bool, teacher_defaults: dict, layout) -> DistillConfig:
    steps, batch, lr = METHOD_DEFAULTS[(config.method, bundled)]
    cfg = float(teacher_defaults.get("cfg") or 7.0)
    if config.guidance is None:
        if config.method == "lcm":  # the student learns a range of guidance scales (w-conditioning)
            guidance = (max(1.0, cfg - 1.0), cfg + 1.0)
        else:  # LCM-LoRA bakes one guidance scale in
            guidance = (cfg, cfg)
    else:
        guidance = config.guidance
    bundled_lcm = bundled and config.method == "lcm"  # the measured recipe (docs/distill.md)
    student_unet = config.student_unet or ("compact" if bundled_lcm else "full")
    max_steps = config.max_train_steps or steps
    kd_steps = (
        config.kd_steps
        if config.kd_steps is not None
        else (int(max_steps * KD_FRACTION) if student_unet == "compact" else 0)
    )
    return replace(
        config,
        student_unet=student_unet,
        kd_steps=kd_steps,
        student_vae=config.student_vae or ("tiny" if bundled_lcm else "teacher"),
        max_train_steps=max_steps,
        batch_size=config.batch_size or batch,
        learning_rate=config.learning_rate or lr,
        lr_schedule=config.lr_schedule or ("linear" if bundled_lcm else "constant"),
        guidance=guidance,
        cfg_cutoff=config.cfg_cutoff
        if config.cfg_cutoff is not None
        else float(teacher_defaults.get("cfg_cutoff") or 0.0),
        shift=config.shift or (BUNDLED_LCM_SHIFT if bundled_lcm else 1.0),
        resolution=config.resolution or layout.native_size,
        num_samples=config.num_samples or (4096 if bundled else None),
        report_n=config.report_n or default_report_n(bundled),
    )


def run_fingerprint(config: DistillConfig) -> str:
    """Identifies a run (its settings, not its length) so a resumed run can find its own --out."""
    import hashlib

    d = config.to_dict()
    for k in NOT_IDENTIFYING:
        d.pop(k, None)
    for k, v in LEGACY_VALUES.items():
        if d.get(k) == v:
            d.pop(k)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan(config: DistillConfig) -> Plan:
    """Check everything that can be checked without loading weights; returns the filled-in plan."""
    config.validate()
    if config.mixed_precision == "fp16":
        import torch

        if config.device == "cpu" or not torch.cuda.is_available():
            raise UsageError("--mixed-precision fp16 needs a GPU; use bf16 (or no) on the CPU")
    if config.device not in (None, "auto", "cpu") and not str(config.device).startswith("cuda"):
        raise UsageError(f"--device {config.device}: distill runs on cpu or cuda")
    if config.method == "lcm-lora":
        import importlib.util

        if importlib.util.find_spec("peft") is None:
            raise UsageError("--method lcm-lora needs the peft package (pip install peft)")
    if config.report_prompts:
        check_prompts(Path(config.report_prompts).expanduser())
    if config.data:
        items = check_folder(Path(config.data).expanduser())
        source = "folder"
    elif config.prompts:
        items = check_prompts(Path(config.prompts).expanduser())
        source = "prompts"
    else:
        items, source = [], None
    ref, layout = _teacher(config)
    from diffcli.bundled import MODEL_NAME

    bundled = ref.source == "bundled" and ref.name == MODEL_NAME  # the teacher with a scene generator and evaluator
    if source is None:
        if not bundled:
            raise UsageError(
                f"{config.teacher}: give training data with --data DIR (images with .txt captions) "
                "or --prompts FILE (the teacher draws the images)"
            )
        source = "scenes"
    defaults = layout.recommended()
    defaults = {**defaults, **{k: v for k, v in getattr(ref, "defaults", {}).items() if v is not None}}
    config = _fill_defaults(config, bundled, defaults, layout)
    if config.kd_steps >= config.max_train_steps:
        raise UsageError(
            f"--kd-steps {config.kd_steps} leaves no consistency steps in --max-train-steps {config.max_train_steps}"
        )
    if config.student_unet == "compact":
        from diffcli.distill.compact import keeps_cross_attention

        unet = json.loads((Path(ref.path) / "unet" / "config.json").read_text())
        if not keeps_cross_attention(unet):
            raise UsageError(
                f"--student-unet compact: {config.teacher}'s UNet has cross-attention only where the "
                "compact student removes it; use --student-unet full"
            )
    vae = _student_vae(config.student_vae, bundled, ref.path)
    _check_out(config, run_fingerprint(config))
    return Plan(
        config=config,
        ref=ref,
        layout=layout,
        source=source,
        teacher_defaults=defaults,
        items=items,
        bundled=bundled,
        student_vae=vae,
    )


def _student_vae(choice: str, bundled: bool, teacher: Path) -> Path | None:
    """The autoencoder directory a student ships (None: the teacher's), checked against the teacher's latents."""
    if choice == "teacher":
        return None
    if choice == "tiny":
        if not bundled:
            raise UsageError(
                "--student-vae tiny is the bundled model's tiny autoencoder; for another teacher give "
                "a directory (e.g. a download of madebyollin/taesd for SD 1.x/2.x)"
            )
        from diffcli.bundled import TINY_AE_DIR

        return TINY_AE_DIR
    path = Path(choice).expanduser()
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        raise UsageError(f"--student-vae {choice}: not an autoencoder directory (no readable config.json)") from None
    if cfg.get("_class_name") not in ("AutoencoderTiny", "AutoencoderKL"):
        raise UsageError(f"--student-vae {choice}: a {cfg.get('_class_name')}, not an AutoencoderTiny or AutoencoderKL")
    try:
        theirs = json.loads((Path(teacher) / "vae" / "config.json").read_text()).get("latent_channels")
    except (OSError, ValueError):
        theirs = None
    if theirs is not None and cfg.get("latent_channels") != theirs:
        raise UsageError(
            f"--student-vae {choice}: {cfg.get('latent_channels')} latent channels; the teacher's latents have {theirs}"
        )
    return path

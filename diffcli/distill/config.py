"""Every setting of a distillation run, validated without importing torch."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from diffcli.distill import METHODS
from diffcli.errors import UsageError
from diffcli.guidance import check_cutoff
from diffcli.timesteps import check_shift

# Held-out prompts in the report: at 128 the adherence figures' standard error (~0.02) was as large
# as the margin to the bar, so one prompt could flip a verdict; 512 halves it for ~1 more minute.
REPORT_N = 512
# With the bundled teacher (64-px images, scored by its evaluator) the report draws 2048: between
# sets of 512 the FD ratio moved by about +-0.2, enough to pass or fail a student near the bar
# (docs/distill.md, "How far one report can be trusted"); 2048 costs a few minutes more.
BUNDLED_REPORT_N = 2048


def default_report_n(bundled_teacher: bool) -> int:
    return BUNDLED_REPORT_N if bundled_teacher else REPORT_N


# Settings that may change between a run and its --resume (everything else must match).
RESUMABLE_CHANGES = (
    "max_train_steps",
    "checkpoint_every",
    "report",
    "report_n",
    "report_prompts",
    "keep_checkpoints",
    "device",
    "fuse",
    "threads",
    "shift",
)
# ...and with the run-control flags: what does not identify a run (its fingerprint, its differences).
NOT_IDENTIFYING = (*RESUMABLE_CHANGES, "resume", "overwrite", "offline", "out", "checkpoint_dir")
# Settings added after runs existed, and how those earlier runs behaved: a run.json without the key
# reads as this value, and the value is left out of the run's fingerprint, so such runs still resume.
LEGACY_VALUES = {"lr_schedule": "constant"}


@dataclass
class DistillConfig:
    teacher: str = "tiny"
    out: str = ""
    method: str = "lcm"
    data: str | None = None
    prompts: str | None = None
    max_train_steps: int | None = None  # None: the method's default for this teacher
    batch_size: int | None = None
    learning_rate: float | None = None
    lr_schedule: str | None = None  # constant | linear (to 0 over the consistency steps); None: see preflight
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no | fp16 | bf16
    num_ddim_timesteps: int = 50
    guidance: tuple[float, float] | None = None  # teacher CFG range (pipeline scale); None: from the teacher
    cfg_cutoff: float | None = None  # teacher guides only at timesteps >= this * T; None: the teacher's default
    loss: str = "huber"  # huber | l2
    huber_c: float = 0.001
    ema_decay: float = 0.95
    lora_rank: int = 16
    student_unet: str | None = None  # full | compact; None: compact for the bundled teacher's lcm student
    student_vae: str | None = None  # teacher | tiny | DIR; None: tiny for the bundled teacher
    kd_steps: int | None = None  # compact student: steps of knowledge distillation before LCD
    shift: float | None = None  # the student's default timestep shift (diffcli.timesteps); None: see preflight
    fuse: bool = False  # lcm-lora: also write the base with the LoRA fused in (a full model directory)
    time_cond_dim: int = 256
    resolution: int | None = None  # None: the teacher's native size
    num_samples: int | None = None  # training images to prepare (scenes / prompts); None: default
    checkpoint_every: int = 250
    checkpoint_dir: str | None = None
    resume: bool = False
    seed: int = 0
    device: str | None = None
    threads: int | None = None  # torch CPU threads (None: torch's default)
    report: bool = True
    report_n: int | None = None  # None: default_report_n(bundled teacher)
    report_prompts: str | None = None
    offline: bool = False
    overwrite: bool = False
    keep_checkpoints: int = 2
    extra: dict = field(default_factory=dict)

    # ----------------------------------------------------------------- derived
    @property
    def out_path(self) -> Path:
        return Path(self.out).expanduser()

    @property
    def ckpt_path(self) -> Path:
        if self.checkpoint_dir:
            return Path(self.checkpoint_dir).expanduser()
        out = self.out_path
        return out.parent / f"{out.name}.distill"

    def validate(self) -> "DistillConfig":
        if not self.out:
            raise UsageError("missing --out DIR (where the student is written)")
        if self.method not in METHODS:
            hint = " ('progressive' is planned, not built yet)" if self.method == "progressive" else ""
            raise UsageError(f"unknown --method '{self.method}'{hint}; choose one of: {', '.join(METHODS)}")
        if self.data and self.prompts:
            raise UsageError("use either --data DIR or --prompts FILE, not both")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise UsageError(f"invalid --mixed-precision '{self.mixed_precision}'; use no, fp16 or bf16")
        if self.loss not in ("huber", "l2"):
            raise UsageError(f"invalid --loss '{self.loss}'; use huber or l2")
        for name in ("max_train_steps", "batch_size", "checkpoint_every", "num_samples", "resolution", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if self.gradient_accumulation_steps < 1:
            raise UsageError("--gradient-accumulation-steps must be at least 1")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise UsageError("--learning-rate must be in (0, 1)")
        if self.lr_schedule not in (None, "constant", "linear"):
            raise UsageError(f"invalid --lr-schedule '{self.lr_schedule}'; use constant or linear")
        if not 2 <= self.num_ddim_timesteps <= 1000:
            raise UsageError("--num-ddim-timesteps must be in [2, 1000]")
        if not 0 <= self.ema_decay < 1:
            raise UsageError("--ema-decay must be in [0, 1)")
        if self.fuse and self.method != "lcm-lora":
            raise UsageError("--fuse is for --method lcm-lora (the lcm method always writes a full model)")
        if self.student_unet not in (None, "full", "compact"):
            raise UsageError(f"invalid --student-unet '{self.student_unet}'; use full or compact")
        if self.student_unet == "compact" and self.method != "lcm":
            raise UsageError("--student-unet compact is for --method lcm (a LoRA keeps the teacher's UNet)")
        if self.student_vae not in (None, "teacher") and self.method != "lcm":
            raise UsageError("--student-vae is for --method lcm (a LoRA student uses its base model's VAE)")
        if self.kd_steps is not None and self.kd_steps < 0:
            raise UsageError("--kd-steps must be 0 or more")
        if self.lora_rank < 1:
            raise UsageError("--lora-rank must be at least 1")
        if self.guidance is not None:
            lo, hi = self.guidance
            if lo < 1 or hi < lo:
                raise UsageError("--guidance MIN,MAX needs 1 <= MIN <= MAX (classifier-free guidance scales)")
        check_cutoff(self.cfg_cutoff)
        check_shift(self.shift)
        if self.resolution is not None and self.resolution % 8:
            raise UsageError("--resolution must be a multiple of 8")
        if self.report_n is not None and self.report_n < 3:
            raise UsageError("--report-n must be at least 3")
        return self

    # ------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        d = asdict(self)
        d["guidance"] = list(self.guidance) if self.guidance else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DistillConfig":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if d.get("method"):  # a saved run, not bare flags
            kw.update({k: v for k, v in LEGACY_VALUES.items() if k not in d})
        if kw.get("guidance"):
            kw["guidance"] = tuple(kw["guidance"])
        return cls(**kw)

    def differences(self, other: "DistillConfig") -> list[str]:
        """Settings (besides the resumable ones) that differ from OTHER's."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [k for k in mine if k not in NOT_IDENTIFYING and mine[k] != theirs.get(k)]

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def parse_guidance(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise UsageError(f"invalid --guidance '{text}'; expected a scale like 4 or a range like 3,6") from None
    if len(parts) == 1:
        return (parts[0], parts[0])
    if len(parts) != 2:
        raise UsageError(f"invalid --guidance '{text}'; expected a scale like 4 or a range like 3,6")
    return (parts[0], parts[1])

"""`diffcli distill`: turn a text-to-image model into a 1-8-step LCM student, with a quality report."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from diffcli.cli.options import Debug, Json, Offline, Quiet

DATA = "Data"
TRAIN = "Training"
OUTP = "Output and resume"

HELP = """Distill a teacher into a few-step latent consistency student (LCM), then write a quality report.

Examples:

  diffcli distill --teacher tiny --out ./tiny-lcm

  diffcli distill --teacher sd15 --data ./photos --out ./sd15-lcm-lora --method lcm-lora

  diffcli distill --out ./tiny-lcm --resume    (continue after a crash or Ctrl-C)

  diffcli distill --report ./tiny-lcm    (write the quality report of a student again)

Several GPUs: accelerate launch -m diffcli distill ...; several CPU processes:
torchrun --standalone --nproc_per_node N -m diffcli distill ...
"""


def distill(
    teacher: Annotated[
        Optional[str],
        typer.Option(
            "--teacher",
            "-t",
            help="Teacher model (any --model name). Default: the bundled 'tiny'.",
            rich_help_panel=DATA,
        ),
    ] = None,
    out: Annotated[
        Optional[str],
        typer.Option(
            "--out",
            "-o",
            help="Directory for the student (model directory, or LoRA + base record).",
            rich_help_panel=OUTP,
        ),
    ] = None,
    method: Annotated[
        Optional[str],
        typer.Option("--method", help="lcm (full UNet, guidance-conditioned) or lcm-lora.", rich_help_panel=TRAIN),
    ] = None,
    data: Annotated[
        Optional[str],
        typer.Option("--data", help="Folder of images with same-name .txt captions.", rich_help_panel=DATA),
    ] = None,
    prompts: Annotated[
        Optional[str],
        typer.Option(
            "--prompts",
            help="Prompts file (one per line): the teacher draws the training images (cached).",
            rich_help_panel=DATA,
        ),
    ] = None,
    num_samples: Annotated[
        Optional[int],
        typer.Option(
            "--num-samples",
            help="Training images to draw/render (scenes: 4096; prompts: one per prompt).",
            rich_help_panel=DATA,
        ),
    ] = None,
    resolution: Annotated[
        Optional[int],
        typer.Option("--resolution", help="Training image size (default: the teacher's).", rich_help_panel=DATA),
    ] = None,
    max_train_steps: Annotated[
        Optional[int],
        typer.Option(
            "--max-train-steps",
            help="Optimizer steps, KD steps included (bundled teacher: 1200, lcm-lora 1500; others: 4000).",
            rich_help_panel=TRAIN,
        ),
    ] = None,
    batch_size: Annotated[
        Optional[int],
        typer.Option("--batch-size", help="Images per step, all processes together.", rich_help_panel=TRAIN),
    ] = None,
    learning_rate: Annotated[
        Optional[float], typer.Option("--learning-rate", "--lr", help="AdamW learning rate.", rich_help_panel=TRAIN)
    ] = None,
    lr_schedule: Annotated[
        Optional[str],
        typer.Option(
            "--lr-schedule",
            help=(
                "constant, or linear: after the warm-up and any KD steps, the learning rate falls linearly to 0 "
                "at the last step. Default: linear for the bundled teacher's lcm student, else constant."
            ),
            rich_help_panel=TRAIN,
        ),
    ] = None,
    gradient_accumulation_steps: Annotated[
        Optional[int],
        typer.Option("--gradient-accumulation-steps", help="Micro-batches per optimizer step.", rich_help_panel=TRAIN),
    ] = None,
    mixed_precision: Annotated[
        Optional[str], typer.Option("--mixed-precision", help="no, fp16 (GPU) or bf16.", rich_help_panel=TRAIN)
    ] = None,
    guidance: Annotated[
        Optional[str],
        typer.Option(
            "--guidance",
            help="Teacher CFG scale, or MIN,MAX range the lcm student learns (default: around the teacher's).",
            rich_help_panel=TRAIN,
        ),
    ] = None,
    cfg_cutoff: Annotated[
        Optional[float],
        typer.Option(
            "--cfg-cutoff",
            help=(
                "The teacher guides only at timesteps >= this fraction of the schedule, in [0, 1), as it does "
                "when it samples (default: the teacher's own, else 0)."
            ),
            rich_help_panel=TRAIN,
        ),
    ] = None,
    num_ddim_timesteps: Annotated[
        Optional[int],
        typer.Option(
            "--num-ddim-timesteps", help="Skipping-step schedule length of the DDIM solver.", rich_help_panel=TRAIN
        ),
    ] = None,
    loss: Annotated[Optional[str], typer.Option("--loss", help="huber or l2.", rich_help_panel=TRAIN)] = None,
    ema_decay: Annotated[
        Optional[float],
        typer.Option("--ema-decay", help="EMA decay of the target network (lcm).", rich_help_panel=TRAIN),
    ] = None,
    lora_rank: Annotated[
        Optional[int], typer.Option("--lora-rank", help="LoRA rank (lcm-lora).", rich_help_panel=TRAIN)
    ] = None,
    student_unet: Annotated[
        Optional[str],
        typer.Option(
            "--student-unet",
            help=(
                "lcm: full (the teacher's UNet) or compact (lowest level's attention and mid block removed; "
                "faster). Default: compact for the bundled teacher."
            ),
            rich_help_panel=TRAIN,
        ),
    ] = None,
    student_vae: Annotated[
        Optional[str],
        typer.Option(
            "--student-vae",
            help=(
                "Autoencoder the lcm student ships: teacher, tiny (the bundled model's) or a directory (e.g. "
                "TAESD). Default: tiny for the bundled teacher."
            ),
            rich_help_panel=TRAIN,
        ),
    ] = None,
    kd_steps: Annotated[
        Optional[int],
        typer.Option(
            "--kd-steps",
            help=(
                "Compact student: first N steps regress the teacher's guided prediction (default: half of "
                "--max-train-steps)."
            ),
            rich_help_panel=TRAIN,
        ),
    ] = None,
    shift: Annotated[
        Optional[float],
        typer.Option(
            "--shift",
            help=(
                "Timestep shift the student samples with by default (see txt2img --shift); written to its "
                "settings and used by the report. Default: 0.5 for the bundled teacher's lcm student, else 1."
            ),
            rich_help_panel=OUTP,
        ),
    ] = None,
    fuse: Annotated[
        bool,
        typer.Option(
            "--fuse", help="lcm-lora: also write the base with the LoRA fused in (a full model).", rich_help_panel=OUTP
        ),
    ] = False,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the run.", rich_help_panel=TRAIN)] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu or cuda.", rich_help_panel=TRAIN)] = None,
    threads: Annotated[
        Optional[int],
        typer.Option("--threads", help="CPU threads for torch (default: torch's).", rich_help_panel=TRAIN),
    ] = None,
    checkpoint_every: Annotated[
        Optional[int],
        typer.Option("--checkpoint-every", help="Checkpoint every N steps (and on Ctrl-C).", rich_help_panel=OUTP),
    ] = None,
    checkpoint_dir: Annotated[
        Optional[str],
        typer.Option(
            "--checkpoint-dir",
            help="Checkpoints and data cache (default: OUT.distill next to OUT).",
            rich_help_panel=OUTP,
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run from its last checkpoint.", rich_help_panel=OUTP)
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace what --out holds and start the run over.", rich_help_panel=OUTP)
    ] = False,
    no_report: Annotated[
        bool, typer.Option("--no-report", help="Skip the quality report at the end.", rich_help_panel=OUTP)
    ] = False,
    report: Annotated[
        Optional[str],
        typer.Option("--report", help="Only write the quality report of the student in DIR.", rich_help_panel=OUTP),
    ] = None,
    report_n: Annotated[
        Optional[int],
        typer.Option(
            "--report-n",
            help="Held-out prompts in the report (default 2048 with the bundled teacher, else 512).",
            rich_help_panel=OUTP,
        ),
    ] = None,
    report_prompts: Annotated[
        Optional[str],
        typer.Option(
            "--report-prompts", help="Prompts file for the report (default: held-out ones).", rich_help_panel=OUTP
        ),
    ] = None,
    offline: Offline = False,
    json: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    from diffcli.errors import UsageError

    if report is not None:
        if out or data or prompts or resume:
            raise UsageError("--report DIR only writes a report; leave out --out, --data, --prompts and --resume")
        from diffcli.distill.runner import report_only

        report_only(report, report_n, report_prompts, device, json, quiet, threads)
        return
    from diffcli.distill.config import parse_guidance
    from diffcli.distill.runner import config_from_flags
    from diffcli.distill.runner import distill as run

    given = dict(
        teacher=teacher,
        out=out,
        method=method,
        data=data,
        prompts=prompts,
        num_samples=num_samples,
        resolution=resolution,
        max_train_steps=max_train_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        lr_schedule=lr_schedule,
        gradient_accumulation_steps=gradient_accumulation_steps,
        mixed_precision=mixed_precision,
        guidance=parse_guidance(guidance),
        cfg_cutoff=cfg_cutoff,
        num_ddim_timesteps=num_ddim_timesteps,
        loss=loss,
        ema_decay=ema_decay,
        lora_rank=lora_rank,
        student_unet=student_unet,
        student_vae=student_vae,
        kd_steps=kd_steps,
        shift=shift,
        fuse=fuse or None,
        seed=seed,
        device=device,
        threads=threads,
        checkpoint_every=checkpoint_every,
        checkpoint_dir=checkpoint_dir,
        resume=resume or None,
        overwrite=overwrite or None,
        report=False if no_report else None,
        report_n=report_n,
        report_prompts=report_prompts,
        offline=offline or None,
    )
    if not out:
        raise UsageError("missing --out DIR (where the student is written)")
    run(config_from_flags(given), json_mode=json, quiet=quiet)


def register(app: typer.Typer) -> None:
    app.command("distill", help=HELP)(distill)

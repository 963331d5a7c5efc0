"""Options shared by the generation commands, defined once (Typer `Annotated` aliases)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Optional

import typer

from diffcli import schema
from diffcli.cli.output_flags import output_flag
from diffcli.jobs import Job

GEN = "Generation"
MODEL = "Model and device"
OUT = "Output"
UPSCALE = "Upscale"


def job_flag(name: str):
    """The type the flag of Job field NAME takes: the field's declared one (diffcli.schema), optional."""
    kind = schema.wire_types(Job)[name].kind
    return Optional[list[str] if kind is schema.STRINGS else kind]


InputImage = Annotated[str, typer.Argument(help="Input image.", metavar="IMAGE", show_default=False)]
Model = Annotated[
    job_flag("model"),
    typer.Option(
        "--model",
        "-m",
        help="Model: alias, org/name, local directory, .safetensors file or URL. Default: the bundled 'tiny' model.",
        rich_help_panel=MODEL,
    ),
]
Base = Annotated[
    job_flag("base"),
    typer.Option(
        "--base",
        help=(
            "With a FLUX.1 or SD 3.x transformer file (.safetensors or .gguf) as --model: the diffusers model "
            "(alias, org/name or folder) that supplies its text encoders and VAE."
        ),
        rich_help_panel=MODEL,
    ),
]
Quantize = Annotated[
    job_flag("quantize"),
    typer.Option(
        "--quantize",
        help=(
            "Load the denoiser quantized to fit in less memory: int8 (torchao, any device) or nf4 (bitsandbytes, "
            "CUDA); none by default. See docs/device.md."
        ),
        rich_help_panel=MODEL,
    ),
]
Negative = Annotated[job_flag("negative"), typer.Option("--negative", help="Negative prompt.", rich_help_panel=GEN)]
Steps = Annotated[
    job_flag("steps"), typer.Option("--steps", help="Denoising steps (default: the model's).", rich_help_panel=GEN)
]
Cfg = Annotated[
    job_flag("cfg"),
    typer.Option("--cfg", help="Classifier-free guidance scale (default: the model's).", rich_help_panel=GEN),
]
CfgCutoff = Annotated[
    job_flag("cfg_cutoff"),
    typer.Option(
        "--cfg-cutoff",
        help=(
            "Guide only the noisier steps: stop guidance once the timestep is below this fraction of the "
            "schedule, in [0, 1) (default: the model's, else 0 = every step)."
        ),
        rich_help_panel=GEN,
    ),
]
Shift = Annotated[
    job_flag("shift"),
    typer.Option(
        "--shift",
        help=(
            "Timestep shift: below 1 moves the sampler's later steps toward the clean end, above 1 toward the "
            "noisy end (default: the model's, else 1 = unchanged)."
        ),
        rich_help_panel=GEN,
    ),
]
Width = Annotated[job_flag("width"), typer.Option("--width", "-W", help="Image width in pixels.", rich_help_panel=GEN)]
Height = Annotated[
    job_flag("height"), typer.Option("--height", "-H", help="Image height in pixels.", rich_help_panel=GEN)
]
Seed = Annotated[
    job_flag("seed"),
    typer.Option(
        "--seed", help="Seed of the first image; image k uses seed+k-1. Random if omitted.", rich_help_panel=GEN
    ),
]
TileSeed = Annotated[
    job_flag("seed"),
    typer.Option(
        "--seed",
        help="Seed of the first tile; tile k (row-major, from 0) uses seed+k. Random if omitted.",
        rich_help_panel=GEN,
    ),
]
NumImages = Annotated[
    job_flag("num_images"), typer.Option("--num-images", "-n", help="How many images.", rich_help_panel=GEN)
]
BatchSize = Annotated[
    job_flag("batch_size"), typer.Option("--batch-size", help="Images denoised together.", rich_help_panel=GEN)
]
# --max-pixels is one flag (RunOptions.max_pixels) with two limits: the generation commands' (and a batch's
# generation jobs') on the pixels of one denoising batch, upscale's on the pixels of its output image.
MaxPixels = Annotated[
    Optional[int],
    typer.Option(
        "--max-pixels",
        help=(
            "Refuse a batch with more pixels (width x height x batch size) than this. Default: what fits this "
            "machine's memory, at most 4096x4096."
        ),
        rich_help_panel=MODEL,
        show_default=False,
    ),
]
OutputMaxPixels = Annotated[
    Optional[int],
    typer.Option(
        "--max-pixels",
        help="Refuse outputs with more pixels than this (default 67108864 = 8192x8192).",
        rich_help_panel=UPSCALE,
    ),
]
Scheduler = Annotated[
    job_flag("scheduler"),
    typer.Option("--scheduler", help="Sampler name; see `diffcli schedulers`.", rich_help_panel=GEN),
]
Lora = Annotated[
    job_flag("lora"),
    typer.Option(
        "--lora",
        help=(
            "LoRA file or name in the LoRA folder (DIFFCLI_LORA_DIR), with an optional :WEIGHT (default 1); "
            "repeat for several."
        ),
        rich_help_panel=GEN,
        metavar="FILE|NAME[:WEIGHT]",
        show_default=False,
    ),
]
Control = Annotated[
    job_flag("control"),
    typer.Option(
        "--control",
        help=(
            "ControlNet and its map: KIND:IMAGE[:SCALE[:START:END]]. KIND: a ControlNet (repo id, folder, "
            ".safetensors file, tiny-control-seg) or a short name (seg, canny, depth, union) for the model "
            "family's default; a union ControlNet as KIND+TYPE (canny, depth, openpose, ...); SCALE weighs it "
            "(default 1); START:END is the part of the steps it acts on (default 0:1). Repeat for several."
        ),
        rich_help_panel=GEN,
        metavar="KIND:IMAGE[:SCALE[:START:END]]",
        show_default=False,
    ),
]
ControlPreprocess = Annotated[
    job_flag("control_preprocess"),
    typer.Option(
        "--control-preprocess",
        help=(
            "Make the control maps from the --control images first: canny (edges), seg (the bundled model's scene "
            "segmenter) or none (the images are the maps; default)."
        ),
        rich_help_panel=GEN,
        metavar="canny|seg|none",
        show_default=False,
    ),
]
Cache = Annotated[
    job_flag("cache"),
    typer.Option(
        "--cache",
        help=(
            "Step caching: deepcache[:N] reuses the UNet's deep features, running the whole UNet every N-th step "
            "only (faster, slightly different images; N default 3; SD 1.x/2.x/SDXL); fbc[:THRESHOLD], "
            "taylorseer[:N], magcache[:THRESHOLD]: diffusers' transformer caches (FLUX.1 and tiny-flux: all three; "
            "Qwen-Image: fbc, taylorseer; FLUX.2, SD 3.x: taylorseer); none (default). See "
            "docs/speed.md."
        ),
        rich_help_panel=GEN,
        metavar="none|deepcache[:N]|fbc[:T]|taylorseer[:N]|magcache[:T]",
        show_default=False,
    ),
]
VaeDecoder = Annotated[
    job_flag("vae_decoder"),
    typer.Option(
        "--vae-decoder",
        help=(
            "What decodes the latents: full (default: the model's VAE), tiny (the family's TAESD tiny "
            "autoencoder, many times faster, a little softer; pulled on use like --model) or an AutoencoderTiny "
            "folder or hub repo id. See docs/device.md."
        ),
        rich_help_panel=GEN,
        metavar="full|tiny|PATH",
        show_default=False,
    ),
]
PromptSyntax = Annotated[
    job_flag("prompt_syntax"),
    typer.Option(
        "--prompt-syntax",
        help=(
            "a1111: (word:1.3), (word), [word], BREAK, <lora:name:0.8> and prompts longer than the text encoder's "
            "window; plain: the prompt as it is. Default: a1111."
        ),
        rich_help_panel=GEN,
        metavar="a1111|plain",
        show_default=False,
    ),
]
Device = Annotated[
    job_flag("device"), typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=MODEL)
]
Dtype = Annotated[
    job_flag("dtype"), typer.Option("--dtype", help="auto, float32, float16 or bfloat16.", rich_help_panel=MODEL)
]
Offload = Annotated[
    Optional[str],
    typer.Option("--offload", help="Keep weights on the CPU until needed: model or sequential.", rich_help_panel=MODEL),
]
VaeTiling = Annotated[bool, typer.Option("--vae-tiling", help="Decode in tiles to save memory.", rich_help_panel=MODEL)]
AttentionSlicing = Annotated[
    bool, typer.Option("--attention-slicing", help="Compute attention in slices to save memory.", rich_help_panel=MODEL)
]
Offline = Annotated[
    bool,
    typer.Option("--offline", help="Never use the network; fail if the model is not present.", rich_help_panel=MODEL),
]
AllowPickle = Annotated[
    bool,
    typer.Option(
        "--allow-pickle",
        help="Allow pickle weights (.ckpt/.bin), loaded with weights_only=True.",
        rich_help_panel=MODEL,
    ),
]
Out = Annotated[
    Optional[str],
    typer.Option(
        "--out",
        "-o",
        help="Output directory, or a file name template such as 'shots/{seed}-{prompt}.png'.",
        rich_help_panel=OUT,
    ),
]
Format = Annotated[
    Optional[str],
    typer.Option("--format", help="png, jpg or webp (default: from --out, else png).", rich_help_panel=OUT),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing files.", rich_help_panel=OUT)]
Json = output_flag("json", "stdout: one JSON object per image; stderr: JSON-lines events.", rich_help_panel=OUT)
Quiet = output_flag("quiet", "Print nothing but results and errors.", rich_help_panel=OUT)
Debug = output_flag("debug", "Show tracebacks.", rich_help_panel=OUT)
SavePartial = Annotated[
    bool,
    typer.Option("--save-partial", help="On Ctrl-C, save the unfinished images as NAME-partial.", rich_help_panel=OUT),
]
Compile = Annotated[
    bool,
    typer.Option(
        "--compile",
        help=(
            "batch: torch.compile the UNet or transformer once loaded; the first image of each size pays the "
            "compile (reported), later ones run faster. Pixels differ by float rounding only. Single-image "
            "commands refuse it (use batch or serve). See docs/device.md."
        ),
        rich_help_panel=MODEL,
    ),
]
NoServer = Annotated[
    bool,
    typer.Option(
        "--no-server", help="Run in this process even when a `diffcli serve` server is running.", rich_help_panel=MODEL
    ),
]
From = Annotated[
    Optional[Path],
    typer.Option(
        "--from", help="Reuse the Job recorded in an image made by diffcli; explicit flags win.", rich_help_panel=GEN
    ),
]


def keyword(name: str, annotation, default=None) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


# The shared generation options, in the order --help shows them.
SHARED_GENERATION = [
    keyword("model", Model),
    keyword("base", Base),
    keyword("quantize", Quantize),
    keyword("negative", Negative),
    keyword("steps", Steps),
    keyword("cfg", Cfg),
    keyword("cfg_cutoff", CfgCutoff),
    keyword("shift", Shift),
    keyword("width", Width),
    keyword("height", Height),
    keyword("seed", Seed),
    keyword("num_images", NumImages),
    keyword("batch_size", BatchSize),
    keyword("scheduler", Scheduler),
    keyword("lora", Lora),
    keyword("control", Control),
    keyword("control_preprocess", ControlPreprocess),
    keyword("prompt_syntax", PromptSyntax),
    keyword("cache", Cache),
    keyword("vae_decoder", VaeDecoder),
    keyword("from_image", From),
    keyword("device", Device),
    keyword("dtype", Dtype),
    keyword("offload", Offload),
    keyword("max_pixels", MaxPixels),
    keyword("vae_tiling", VaeTiling, False),
    keyword("attention_slicing", AttentionSlicing, False),
    keyword("offline", Offline, False),
    keyword("allow_pickle", AllowPickle, False),
    keyword("out", Out),
    keyword("format", Format),
    keyword("overwrite", Overwrite, False),
    keyword("json", Json, False),
    keyword("quiet", Quiet, False),
    keyword("save_partial", SavePartial, False),
    keyword("debug", Debug, False),
]

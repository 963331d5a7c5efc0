"""`diffcli upscale`: plan (no torch), then resample or diffuse tile by tile, blend, save.

Methods:
- `lanczos`: plain resampling; no model.
- `tiled`  ("SD upscale"): resample to the target size with lanczos, then img2img over overlapping
  tiles at the model's native size with a low strength; works with any text-to-image model.
- `model`:  a dedicated diffusion upscaler (StableDiffusionUpscalePipeline x4,
  StableDiffusionLatentUpscalePipeline x2), run over overlapping tiles of the input.
- `auto`:   `model` when the model is an upscaler, else `tiled`.

Everything that can be decided without the weights (flags, input, method, scale, output size, tile
grid, output path) is decided in `prepare`, so bad input fails before torch is imported and nothing
is written.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from diffcli.errors import UsageError
from diffcli.jobs import Job
from diffcli.jobs import validate as validate_job
from diffcli.limits import MAX_SEED
from diffcli.upscale.tiles import BandBlender, Grid, Tile, plan_grid, tile_weights

METHODS = ("auto", "model", "tiled", "lanczos")
DEFAULT_SCALE = 2
MAX_SCALE = 16
DEFAULT_MAX_PIXELS = 8192 * 8192  # 64 Mpx: below Pillow's decompression-bomb limit, so outputs read back
DEFAULT_STRENGTH = 0.3  # the usual "SD upscale" strength for SD-family models on 512-px tiles
# Measured (docs/upscale.md): the bundled model is best at 0.1; 0.3 loses PSNR on every pair tried.
FAMILY_STRENGTH = {"bundled": 0.1}
DEFAULT_NOISE_LEVEL = 20  # StableDiffusionUpscalePipeline's own default
# the latent upscaler pipeline preconditions with scheduler.sigmas and scale_model_input = x / sqrt(sigma^2 + 1)
LATENT_SCHEDULERS = (
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "LMSDiscreteScheduler",
)


@dataclass(frozen=True)
class Request:
    """What the flags say (None = use the default)."""

    image: str
    scale: int | None = None
    method: str = "auto"
    model: str | None = None
    prompt: str | None = None
    negative: str | None = None
    strength: float | None = None
    noise_level: int | None = None
    tile_size: int | None = None
    overlap: int | None = None
    steps: int | None = None
    cfg: float | None = None
    cfg_cutoff: float = 0.0  # tiled: guidance only at timesteps >= cfg_cutoff * 1000 (diffcli.guidance)
    shift: float | None = None  # tiled: timestep shift (diffcli.timesteps); None: the model's, else 1
    seed: int | None = None
    scheduler: str | None = None
    device: str | None = None
    dtype: str | None = None
    max_pixels: int | None = None
    fidelity: str | None = None


FIDELITIES = ("none", "lowpass", "backproject")
BACKPROJECT_ITERATIONS = 4
DEFAULT_FIDELITY = "backproject"  # best PSNR of the three on 3 of 4 measured pairs (docs/upscale.md)


@dataclass(frozen=True)
class Options:
    out: str | None = None
    fmt: str | None = None
    overwrite: bool = False
    json: bool = False
    offline: bool = False
    allow_pickle: bool = False
    offload: str | None = None
    vae_tiling: bool = False
    attention_slicing: bool = False
    results: object = None  # callable taking each stdout line (a server sends them to its client); None: stdout


@dataclass
class Plan:
    """A request with every default filled in, its input read and its output planned."""

    method: str  # model | tiled | lanczos
    kind: str | None  # x4 | latent | img2img | None (lanczos)
    source: object  # PIL RGB image
    source_path: Path
    scale: int
    out_size: tuple[int, int]
    seed: int | None
    prompt: str = ""
    negative: str = ""
    ref: object = None
    layout: object = None
    grid: Grid | None = None
    unit: int = 1  # output pixels per grid unit: 1 for tiled (output space), scale for model (input space)
    tile_size: int | None = None
    overlap: int | None = None
    steps: int | None = None
    steps_per_tile: int = 0
    cfg: float | None = None
    cfg_cutoff: float = 0.0  # tiled: guidance only at timesteps >= cfg_cutoff * 1000 (diffcli.guidance)
    shift: float = 1.0  # tiled: timestep shift (diffcli.timesteps)
    scheduler: str | None = None
    strength: float | None = None
    noise_level: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    fidelity: str = DEFAULT_FIDELITY
    paths: list[Path] = field(default_factory=list)
    fmt: str = "PNG"

    @property
    def total_steps(self) -> int:
        return self.grid.count * self.steps_per_tile if self.grid else 0


# ---------------------------------------------------------------- planning (no torch)
def validate(r: Request) -> None:
    """Checks that need neither the input nor the model."""
    if r.method not in METHODS:
        raise UsageError(f"unknown --method '{r.method}'; use one of {', '.join(METHODS)}")
    if r.fidelity is not None and r.fidelity not in FIDELITIES:
        raise UsageError(f"unknown --fidelity '{r.fidelity}'; use one of {', '.join(FIDELITIES)}")
    if r.scale is not None and not 2 <= r.scale <= MAX_SCALE:
        raise UsageError(f"--scale must be between 2 and {MAX_SCALE} (got {r.scale})")
    if r.noise_level is not None and r.noise_level < 0:
        raise UsageError(f"--noise-level must be 0 or more (got {r.noise_level})")
    if r.tile_size is not None and r.tile_size < 1:
        raise UsageError(f"--tile-size must be positive (got {r.tile_size})")
    if r.overlap is not None and r.overlap < 0:
        raise UsageError(f"--overlap must be 0 or more (got {r.overlap})")
    if r.tile_size is not None and r.overlap is not None and r.overlap >= r.tile_size:
        raise UsageError(f"--overlap {r.overlap} must be smaller than --tile-size {r.tile_size}")
    if r.max_pixels is not None and r.max_pixels < 1:
        raise UsageError(f"--max-pixels must be positive (got {r.max_pixels})")
    # the flags shared with the generation commands: the same checks and messages as theirs
    validate_job(
        Job(
            steps=r.steps,
            cfg=r.cfg,
            seed=r.seed,
            strength=r.strength,
            scheduler=r.scheduler,
            device=r.device,
            dtype=r.dtype,
            shift=r.shift,
        )
    )


def _choose_method(r: Request, opts: Options, reporter):
    """(method, kind, ref, layout)."""
    if r.method == "lanczos":
        if r.model:
            reporter.warn("--model is not used by --method lanczos; ignored")
        return "lanczos", None, None, None
    from diffcli.models.layout import read_layout

    ref = resolve_model(r.model, opts, reporter)
    installed = (Path(ref.path) / "model_index.json").is_file()
    if r.method == "auto" and r.model is None and ref.source == "bundled" and not installed:
        reporter.warn("the bundled model is not installed; falling back to --method lanczos")
        return "lanczos", None, None, None
    layout = read_layout(ref.path) if ref.kind == "diffusers" else None
    upscaler = layout is not None and layout.is_upscaler
    method = r.method if r.method != "auto" else ("model" if upscaler else "tiled")
    if method == "model" and not upscaler:
        what = layout.pipeline_class if layout else "a single-file checkpoint"
        raise UsageError(f"{ref.name}: is not an upscaler model ({what}); use --method tiled, or an upscaler model")
    if method == "tiled" and upscaler:
        raise UsageError(
            f"{ref.name}: is an upscaler model; --method tiled needs a text-to-image model (use --method model)"
        )
    if method == "tiled" and layout is not None and layout.is_inpaint:
        raise UsageError(f"{ref.name}: is an inpainting model; --method tiled needs a text-to-image model")
    kind = "img2img"
    if method == "model":
        if layout.pipeline_class == "StableDiffusionUpscalePipeline":
            kind = "x4"
        elif layout.pipeline_class == "StableDiffusionLatentUpscalePipeline":
            kind = "latent"
        else:
            raise UsageError(f"{ref.name}: unsupported upscaler pipeline {layout.pipeline_class}")
    return method, kind, ref, layout


def resolve_model(name: str | None, opts: Options, reporter=None):
    from diffcli.models import resolve
    from diffcli.progress import download_progress

    return resolve(name, offline=opts.offline, allow_pickle=opts.allow_pickle, progress=download_progress(reporter))


def model_scale(kind: str, layout) -> int:
    """The one factor a dedicated upscaler produces: x4 decodes input-size latents with its VAE; the
    latent upscaler doubles the latents."""
    return layout.vae_scale_factor if kind == "x4" else 2


def default_overlap(tile: int) -> int:
    return min(64, max(1, tile // 4))


def _max_noise_level(layout) -> int:
    try:
        return int(json.loads((Path(layout.path) / "model_index.json").read_text()).get("max_noise_level", 350))
    except (OSError, ValueError):
        return 350


def prepare(r: Request, opts: Options, reporter) -> Plan:
    """Every check that needs no weights; plans the output path last (so errors create nothing)."""
    from diffcli.images import load_rgb
    from diffcli.output import plan_paths

    validate(r)
    source = load_rgb(r.image)
    method, kind, ref, layout = _choose_method(r, opts, reporter)
    w, h = source.size

    if method == "model":
        native = model_scale(kind, layout)
        scale = r.scale or native
        if scale != native:
            raise UsageError(
                f"{ref.name}: upscales by x{native} only, not x{scale}; use --scale {native},"
                " or --method tiled or lanczos"
            )
    else:
        scale = r.scale or DEFAULT_SCALE
    out_w, out_h = w * scale, h * scale
    limit = r.max_pixels or DEFAULT_MAX_PIXELS
    if out_w * out_h > limit:
        raise UsageError(
            f"the output would be {out_w}x{out_h} = {out_w * out_h} pixels, over the limit of {limit};"
            f" pass --max-pixels {out_w * out_h} to allow it"
        )
    for flag, value in (("--strength", r.strength), ("--shift", r.shift)):
        if value is not None and method != "tiled":
            raise UsageError(f"{flag} applies to --method tiled only (this run uses --method {method})")
    if r.noise_level is not None and kind != "x4":
        raise UsageError("--noise-level applies to x4 upscaler models only")

    plan = Plan(
        method=method,
        kind=kind,
        source=source,
        source_path=Path(r.image),
        scale=scale,
        out_size=(out_w, out_h),
        seed=_seed(r, method),
        ref=ref,
        layout=layout,
        device=r.device or "auto",
        dtype=r.dtype or "auto",
        fidelity=r.fidelity or DEFAULT_FIDELITY,
    )
    from diffcli.metadata import recorded_prompt

    prompt = r.prompt if r.prompt is not None else recorded_prompt(r.image)
    plan.prompt, plan.negative = prompt or "", r.negative or ""

    if method == "lanczos":
        unused = [
            f
            for f, v in (
                ("--tile-size", r.tile_size),
                ("--overlap", r.overlap),
                ("--fidelity", r.fidelity),
                ("--steps", r.steps),
                ("--cfg", r.cfg),
                ("--scheduler", r.scheduler),
            )
            if v is not None
        ]
        if unused:
            reporter.warn(f"{', '.join(unused)}: not used by --method lanczos; ignored")
    else:
        _plan_model_run(plan, r, reporter)

    values = [
        {
            "seed": plan.seed if plan.seed is not None else method,
            "prompt": plan.prompt,
            "model": Path(str(ref.name)).name if ref else "lanczos",
            "steps": plan.steps,
            "cfg": plan.cfg,
            "task": "upscale",
        }
    ]
    plan.paths, plan.fmt = plan_paths(opts.out, opts.fmt, values, opts.overwrite)
    return plan


def _seed(r: Request, method: str) -> int | None:
    """lanczos draws no noise: it has no seed to record (a --seed given to it is ignored)."""
    if method == "lanczos":
        return None
    return r.seed if r.seed is not None else secrets.randbelow(MAX_SEED + 1)


def _plan_model_run(plan: Plan, r: Request, reporter) -> None:
    from diffcli.settings import model_defaults

    ref, layout = plan.ref, plan.layout
    multiple = layout.vae_scale_factor if layout else 8
    if plan.method == "tiled":
        plan.unit = 1  # tiles in output pixels, at the model's native size
        default_tile = layout.native_size if layout else 512
        extent = plan.out_size
    else:
        plan.unit = plan.scale  # tiles in input pixels; the model sees the low-resolution tile
        default_tile = layout.sample_size if plan.kind == "x4" else max(multiple, layout.native_size // 2)
        extent = plan.source.size
    tile = r.tile_size or default_tile
    where = "output" if plan.method == "tiled" else "input"
    if tile % multiple or tile < multiple:
        low = max(multiple, tile - tile % multiple)
        raise UsageError(
            f"--tile-size {tile} is not valid for {ref.name}: use a multiple of its VAE factor {multiple} (e.g. {low})"
        )
    overlap = r.overlap if r.overlap is not None else default_overlap(tile)
    if overlap >= tile:
        raise UsageError(f"--overlap {overlap} must be smaller than --tile-size {tile} ({where} pixels)")
    plan.tile_size, plan.overlap = tile, overlap
    plan.grid = plan_grid(extent[0], extent[1], tile, overlap, multiple)

    defaults = model_defaults(ref, layout)
    plan.steps = r.steps or int(defaults.get("steps") or 20)
    plan.cfg = r.cfg if r.cfg is not None else float(defaults.get("cfg") if defaults.get("cfg") is not None else 7.0)
    plan.scheduler = r.scheduler or defaults.get("scheduler") or "euler"
    if plan.method == "tiled":
        from diffcli.jobs import check_model_settings, settings_source
        from diffcli.timesteps import check_sampler

        check_model_settings(Job(shift=r.shift), defaults, settings_source(ref))
        plan.cfg_cutoff = float(defaults.get("cfg_cutoff") or 0.0)
        plan.shift = r.shift if r.shift is not None else float(defaults.get("shift") or 1.0)
        check_sampler(plan.scheduler, plan.shift)
        family = layout.family if layout else None
        plan.strength = r.strength if r.strength is not None else FAMILY_STRENGTH.get(family, DEFAULT_STRENGTH)
        from diffcli.timesteps import fewest_steps

        need = fewest_steps(plan.strength)
        if r.steps is None:  # a few-step model's own steps (tiny-lcm: 4) may be too few for a low strength
            plan.steps = max(plan.steps, need)
        plan.steps_per_tile = min(int(plan.steps * plan.strength), plan.steps)
        if plan.steps_per_tile < 1:
            raise UsageError(
                f"--steps {plan.steps} at --strength {plan.strength} runs no denoising step; use --steps {need} or more"
            )
    else:
        plan.steps_per_tile = plan.steps
        if plan.kind == "latent":
            from diffcli.schedulers import SCHEDULERS, spec

            if spec(plan.scheduler).cls not in LATENT_SCHEDULERS:
                names = ", ".join(n for n, sp in SCHEDULERS.items() if sp.cls in LATENT_SCHEDULERS)
                raise UsageError(f"the latent upscaler needs a sigma-based sampler ({names}), not '{plan.scheduler}'")
        if plan.kind == "x4":
            top = _max_noise_level(layout)
            plan.noise_level = r.noise_level if r.noise_level is not None else min(DEFAULT_NOISE_LEVEL, top)
            if plan.noise_level > top:
                raise UsageError(f"--noise-level must be at most {top} for {ref.name} (got {plan.noise_level})")
    if ref is not None and ref.source == "bundled" and plan.prompt:
        from diffcli import bundled

        message = bundled.unknown_words_warning(plan.prompt, from_image=True)
        if message:
            reporter.warn(message)


# ---------------------------------------------------------------- running
def upscale(r: Request, opts: Options, reporter) -> Path:
    """Upscale one image; returns the written path (also printed on stdout)."""
    t0 = time.perf_counter()
    plan = prepare(r, opts, reporter)
    reporter.start("upscale", 1, plan.total_steps)
    if plan.method == "lanczos":
        image = lanczos(plan.source, plan.scale)
        device, dtype, model = "cpu", None, {}
        t_loaded = time.perf_counter()
    else:
        from diffcli.device import choose
        from diffcli.pipelines import LoadOptions, load_base, set_scheduler, task_pipeline
        from diffcli.sink import model_record

        reporter.phase("load")
        choice = choose(plan.device, plan.dtype)
        load = LoadOptions(
            allow_pickle=opts.allow_pickle,
            offload=opts.offload,
            vae_tiling=opts.vae_tiling or plan.method == "model",
            attention_slicing=opts.attention_slicing,
        )
        base = load_base(plan.ref, choice, load, warn=reporter.warn)
        pipe = task_pipeline(base, "img2img") if plan.method == "tiled" else base
        set_scheduler(pipe, plan.scheduler)
        model = model_record(plan.ref)
        device, dtype = choice.device, choice.dtype
        t_loaded = time.perf_counter()
        image = run_tiles(pipe, plan, reporter)
    reporter.phase("save")
    path = plan.paths[0]
    _save(image, path, plan, model, device, dtype, opts, reporter)
    reporter.done(images=1, load_s=round(t_loaded - t0, 3), total_s=round(time.perf_counter() - t0, 3))
    return path


def lanczos(source, scale: int):
    from PIL import Image

    return source.resize((source.width * scale, source.height * scale), Image.LANCZOS)


def _pad(img, w: int, h: int):
    """IMG padded to W x H by repeating its last row and column."""
    if img.size == (w, h):
        return img
    import numpy as np
    from PIL import Image

    arr = np.asarray(img)
    arr = np.pad(arr, ((0, h - arr.shape[0]), (0, w - arr.shape[1]), (0, 0)), mode="edge")
    return Image.fromarray(arr, "RGB")


def tile_input(plan: Plan, tile: Tile):
    """What the model sees for TILE: the lanczos-resampled region (tiled) or the input crop (model)."""
    from PIL import Image

    if plan.method == "tiled":
        out_w, out_h = plan.out_size
        cw, ch = min(tile.w, out_w - tile.x), min(tile.h, out_h - tile.y)
        s = plan.scale
        box = (tile.x / s, tile.y / s, (tile.x + cw) / s, (tile.y + ch) / s)
        crop = plan.source.resize((cw, ch), Image.LANCZOS, box=box)
    else:
        sw, sh = plan.source.size
        cw, ch = min(tile.w, sw - tile.x), min(tile.h, sh - tile.y)
        crop = plan.source.crop((tile.x, tile.y, tile.x + cw, tile.y + ch))
    return _pad(crop, tile.w, tile.h)


def run_tiles(pipe, plan: Plan, reporter, process=None):
    """Run every tile through the model and blend the results into the output image.

    PROCESS(tile, image, generator, tick) -> float RGB (h, w, 3) in [0, 1] replaces the model call
    (tests use it to check the blending)."""
    import torch

    tiles = plan.grid.tiles()
    total = plan.total_steps
    blender = BandBlender(plan.out_size[0], plan.out_size[1], band=plan.grid.tile_h * plan.unit)
    state = {"done": 0}

    def tick(*_args):
        state["done"] = min(state["done"] + 1, total)
        reporter.step(state["done"], total)

    process = process or (lambda tile, img, gen, tk: call_pipeline(pipe, plan, img, gen, tk))
    reporter.begin_batch(1, 1, total)
    for tile in tiles:
        reporter.phase("denoise", tile=tile.index + 1, tiles=len(tiles))
        generator = torch.Generator(device="cpu").manual_seed((plan.seed + tile.index) % (MAX_SEED + 1))
        given = tile_input(plan, tile)
        rgb = process(tile, given, generator, tick)
        expected = (tile.h * plan.unit, tile.w * plan.unit)
        if tuple(rgb.shape[:2]) != expected:
            from diffcli.errors import RuntimeFailure

            raise RuntimeFailure(
                f"the model returned a {rgb.shape[1]}x{rgb.shape[0]} tile, expected {expected[1]}x{expected[0]}"
            )
        if plan.fidelity == "lowpass":
            rgb = _fidelity(plan, given, rgb)
        elif plan.fidelity == "backproject":
            rgb = _backproject(plan, tile, rgb)
        blender.add(tile.x * plan.unit, tile.y * plan.unit, rgb, tile_weights(tile, plan.unit))
        state["done"] = (tile.index + 1) * plan.steps_per_tile
    return blender.finish()


def _fidelity(plan: Plan, given, rgb):
    """Keep the tile's detail, take its low frequencies from the lanczos-resampled input."""
    import numpy as np
    from PIL import Image

    from diffcli.upscale.tiles import keep_low_frequencies

    if given.size != (rgb.shape[1], rgb.shape[0]):  # model method: the tile input is low-resolution
        given = given.resize((rgb.shape[1], rgb.shape[0]), Image.LANCZOS)
    reference = np.asarray(given, dtype=np.float32) / 255.0
    return keep_low_frequencies(np.asarray(rgb, dtype=np.float32), reference, sigma=float(plan.scale))


def _backproject(plan: Plan, tile: Tile, rgb):
    """Iterative back-projection (Irani & Peleg 1991): correct the tile until, downsampled to the input's
    resolution, it matches the input there: y += up(x - down(y)). Detail the input cannot see stays."""
    import numpy as np
    from PIL import Image

    s, u = plan.scale, plan.unit
    out_w, out_h = plan.out_size
    x0, y0 = tile.x * u, tile.y * u
    cw, ch = min(tile.w * u, out_w - x0), min(tile.h * u, out_h - y0)
    low = (max(1, round(cw / s)), max(1, round(ch / s)))
    target = (
        np.asarray(
            plan.source.resize(low, Image.LANCZOS, box=(x0 / s, y0 / s, (x0 + cw) / s, (y0 + ch) / s)), dtype=np.float32
        )
        / 255.0
    )

    def resize(arr, size):
        return np.stack(
            [
                np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., c]), "F").resize(size, Image.LANCZOS))
                for c in range(arr.shape[-1])
            ],
            axis=-1,
        )

    y = np.array(rgb, dtype=np.float32)
    valid = y[:ch, :cw]
    for _ in range(BACKPROJECT_ITERATIONS):
        valid += resize(target - resize(valid, low), (cw, ch))
    y[:ch, :cw] = np.clip(valid, 0.0, 1.0)
    return y


def call_pipeline(pipe, plan: Plan, image, generator, tick):
    """One tile through the pipeline; float RGB (h, w, 3) in [0, 1]."""
    common = dict(
        prompt=plan.prompt,
        negative_prompt=plan.negative or None,
        image=image,
        num_inference_steps=plan.steps,
        guidance_scale=plan.cfg,
        generator=generator,
        output_type="np",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if plan.kind == "img2img":
            from diffcli import guidance
            from diffcli.timesteps import schedule_kwargs

            common.update(schedule_kwargs(pipe, plan.steps, plan.shift))
            common.update(
                guidance.pipeline_kwargs(
                    pipe,
                    plan.cfg,
                    plan.cfg_cutoff,
                    plan.steps,
                    plan.strength,
                    on_step=lambda *_: tick(),
                    shift=plan.shift,
                )
            )
            import inspect

            if "width" in inspect.signature(pipe.__call__).parameters:  # SD 3.x, FLUX.1: else their native size
                common.update(width=image.size[0], height=image.size[1])
            out = pipe(**common, strength=plan.strength)
        elif plan.kind == "x4":
            out = pipe(**common, noise_level=plan.noise_level, callback=tick, callback_steps=1)
        else:
            out = pipe(**common, callback=tick, callback_steps=1)
    return out.images[0]


# ---------------------------------------------------------------- output
def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def upscale_record(plan: Plan) -> dict:
    info = {
        "method": plan.method,
        "scale": plan.scale,
        "source": {
            "path": str(plan.source_path.resolve()),
            "width": plan.source.width,
            "height": plan.source.height,
            "sha256": _file_sha256(plan.source_path),
        },
    }
    if plan.grid is not None:
        info.update(
            tile_size=plan.tile_size,
            overlap=plan.overlap,
            tile_space="output" if plan.method == "tiled" else "input",
            tiles=plan.grid.count,
            grid=[len(plan.grid.xs), len(plan.grid.ys)],
            blend="raised-cosine",
        )
    if plan.kind == "latent":
        info["pipeline"] = "StableDiffusionLatentUpscalePipeline"
    elif plan.kind == "x4":
        info.update(pipeline="StableDiffusionUpscalePipeline", noise_level=plan.noise_level)
    elif plan.kind == "img2img":
        info["strength"] = plan.strength
    if plan.grid is not None:
        info["fidelity"] = plan.fidelity
    return info


def _save(image, path: Path, plan: Plan, model: dict, device, dtype, opts: Options, reporter) -> None:
    from diffcli.metadata import build_record
    from diffcli.sink import Sink

    job = {
        "task": "upscale",
        "prompt": plan.prompt,
        "negative": plan.negative,
        "model": plan.ref.name if plan.ref else None,
        "steps": plan.steps,
        "cfg": plan.cfg,
        "cfg_cutoff": plan.cfg_cutoff,
        "shift": plan.shift,
        "width": plan.out_size[0],
        "height": plan.out_size[1],
        "seed": plan.seed,
        "num_images": 1,
        "batch_size": 1,
        "scheduler": plan.scheduler,
        "device": plan.device,
        "dtype": plan.dtype,
        "strength": plan.strength,
        "image": str(plan.source_path.resolve()),
        "mask": None,
        "mask_blur": None,
    }
    record = build_record(job, model, device, dtype, extra={"upscale": upscale_record(plan)})
    result = {
        "seed": plan.seed,
        "width": plan.out_size[0],
        "height": plan.out_size[1],
        "task": "upscale",
        "model": plan.ref.name if plan.ref else None,
        "method": plan.method,
        "scale": plan.scale,
    }
    sink = Sink(fmt=plan.fmt, overwrite=opts.overwrite, as_json=opts.json, reporter=reporter, results=opts.results)
    sink.write(image, path, record, result, 1)

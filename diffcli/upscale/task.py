"""The upscale task: an image made exactly input x scale, detail added by a diffusion model tile by tile.

A task module of the engine (diffcli.run), with a task's small interface: settle its inputs (`settle`),
make its pipeline calls (`pipeline`, `make`), compose its output (`record`). The engine does what every
task shares: it validates the Job (jobs.validate, with diffcli.upscale.rules), finds the model, decides
the defaults with their source (settings.settle), checks the settings against the model's family, picks
the device and dtype for that family, loads the pipeline, and saves through its Sink with the record.

Methods (Job.method):
- `lanczos`: plain resampling; no model.
- `tiled`  ("SD upscale"): resample to the target size with lanczos, then img2img over overlapping
  tiles at the model's native size with a low strength; works with any text-to-image model.
- `model`:  a dedicated diffusion upscaler (StableDiffusionUpscalePipeline x4,
  StableDiffusionLatentUpscalePipeline x2), run over overlapping tiles of the input.
- `auto`:   `model` when the model is an upscaler, else `tiled`.

Everything that can be decided without the weights (method, scale, output size, tile grid, settings) is
decided in `settle`, so bad input fails before torch is imported and nothing is written. A settled job
settles to itself (a client settles, then a server settles again).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from diffcli import family_checks
from diffcli.errors import UsageError
from diffcli.jobs import check_model_settings, settings_source, with_seed
from diffcli.limits import MAX_SEED
from diffcli.settings import model_defaults
from diffcli.settings import settle as settle_settings
from diffcli.upscale.rules import (
    DEFAULT_FIDELITY,
    DEFAULT_MAX_PIXELS,
    DEFAULT_METHOD,
    DEFAULT_NOISE_LEVEL,
    DEFAULT_SCALE,
    DEFAULT_STRENGTH,
    FIXED,
    NOT_TAKEN,
)

if TYPE_CHECKING:  # (tiles needs numpy: imported where tiles are planned and run, not with the engine)
    from diffcli.upscale.tiles import Grid, Tile

BACKPROJECT_ITERATIONS = 4
# the latent upscaler pipeline preconditions with scheduler.sigmas and scale_model_input = x / sqrt(sigma^2 + 1)
LATENT_SCHEDULERS = (
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "LMSDiscreteScheduler",
)
# the record's job: the fields an upscale image has always recorded (its own are in the record's "upscale")
RECORDED = (
    "task",
    "prompt",
    "negative",
    "model",
    "steps",
    "cfg",
    "cfg_cutoff",
    "shift",
    "width",
    "height",
    "seed",
    "num_images",
    "batch_size",
    "scheduler",
    "device",
    "dtype",
    "strength",
    "image",
    "mask",
    "mask_blur",
)


@dataclass
class Plan:
    """What the tiles of one upscale are and what each tile's pipeline call takes (from the settled job)."""

    method: str  # model | tiled | lanczos
    kind: str | None  # x4 | latent | img2img | None (lanczos)
    source: object  # PIL RGB image
    source_path: Path
    scale: int
    out_size: tuple[int, int]
    seed: int | None  # tile i is seeded with seed + i
    prompt: str = ""
    negative: str = ""
    grid: Grid | None = None
    unit: int = 1  # output pixels per grid unit: 1 for tiled (output space), scale for model (input space)
    tile_size: int | None = None
    overlap: int | None = None
    steps: int | None = None
    steps_per_tile: int = 0
    cfg: float | None = None
    cfg_cutoff: float = 0.0  # tiled: guidance only at timesteps >= cfg_cutoff * 1000 (diffcli.guidance)
    shift: float = 1.0  # tiled: timestep shift (diffcli.timesteps)
    strength: float | None = None
    noise_level: int | None = None
    fidelity: str = DEFAULT_FIDELITY

    @property
    def total_steps(self) -> int:
        return self.grid.count * self.steps_per_tile if self.grid else 0


# ---------------------------------------------------------------- settling (no torch)
def settle(job, source, *, resolve, layout_of, max_pixels: int | None, reporter):
    """(job, ref, layout, plan, sources): JOB (jobs.validate passed, SOURCE its input image read) with its
    method, scale, output size, tiles and every setting decided and checked; ref and layout None when no
    model runs (lanczos). RESOLVE(job) -> ref and LAYOUT_OF(ref) -> layout are the engine's (diffcli.run)."""
    method, kind, ref, layout = _choose_method(job, resolve, layout_of, reporter)
    scale = _scale(job, method, kind, ref, layout)
    out_w, out_h = source.width * scale, source.height * scale
    limit = max_pixels or DEFAULT_MAX_PIXELS
    if out_w * out_h > limit:
        raise UsageError(
            f"the output would be {out_w}x{out_h} = {out_w * out_h} pixels, over the limit of {limit};"
            f" pass --max-pixels {out_w * out_h} to allow it"
        )
    for flag, value in (("--strength", job.strength), ("--shift", job.shift)):
        if value is not None and method != "tiled":
            raise UsageError(f"{flag} applies to --method tiled only (this run uses --method {method})")
    if job.noise_level is not None and kind != "x4":
        raise UsageError("--noise-level applies to x4 upscaler models only")
    if (job.width, job.height) not in ((None, None), (out_w, out_h)):
        raise UsageError(f"an upscale's size is its input's x --scale ({out_w}x{out_h}); leave out width and height")
    if job.prompt is None:  # the prompt recorded in the input image, if any
        from diffcli.metadata import recorded_prompt

        job = replace(job, prompt=recorded_prompt(job.image) or "")
    job = replace(job, method=method, scale=scale, width=out_w, height=out_h)
    plan = Plan(
        method=method,
        kind=kind,
        source=source,
        source_path=Path(job.image),
        scale=scale,
        out_size=(out_w, out_h),
        seed=None,
    )
    if method == "lanczos":
        job, sources = _settle_lanczos(job, reporter)
    else:
        job, sources = _settle_model_run(job, ref, layout, plan)
    plan = replace(
        plan,
        seed=job.seed,
        prompt=job.prompt,
        negative=job.negative,
        steps=job.steps,
        cfg=job.cfg,
        cfg_cutoff=job.cfg_cutoff if job.cfg_cutoff is not None else 0.0,
        shift=job.shift if job.shift is not None else 1.0,
        strength=job.strength,
        noise_level=job.noise_level,
        fidelity=job.fidelity or DEFAULT_FIDELITY,
    )
    return job, ref, layout, plan, sources


def _choose_method(job, resolve, layout_of, reporter):
    """(method, kind, ref, layout)."""
    if job.method == "lanczos":
        if job.model:
            reporter.warn("--model is not used by --method lanczos; ignored")
        return "lanczos", None, None, None
    asked = job.method or DEFAULT_METHOD
    ref = resolve(job)
    installed = (Path(ref.path) / "model_index.json").is_file()
    if asked == "auto" and job.model is None and ref.source == "bundled" and not installed:
        reporter.warn("the bundled model is not installed; falling back to --method lanczos")
        return "lanczos", None, None, None
    layout = layout_of(ref)
    upscaler = layout is not None and layout.is_upscaler
    method = asked if asked != "auto" else ("model" if upscaler else "tiled")
    if method == "model" and not upscaler:
        what = layout.pipeline_class if layout else "a single-file checkpoint"
        raise UsageError(f"{ref.name}: is not an upscaler model ({what}); use --method tiled, or an upscaler model")
    if method == "tiled" and upscaler:
        raise UsageError(
            f"{ref.name}: is an upscaler model; --method tiled needs a text-to-image model (use --method model)"
        )
    if method == "tiled" and layout is not None and layout.is_inpaint:
        raise UsageError(f"{ref.name}: is an inpainting model; --method tiled needs a text-to-image model")
    if method == "tiled" and family_checks.single_task(layout) == "edit":
        raise UsageError(
            f"{ref.name}: is an instruction-editing model; --method tiled needs a text-to-image model "
            "(`diffcli edit` edits with it)"
        )
    kind = "img2img"
    if method == "model":
        if layout.pipeline_class == "StableDiffusionUpscalePipeline":
            kind = "x4"
        elif layout.pipeline_class == "StableDiffusionLatentUpscalePipeline":
            kind = "latent"
        else:
            raise UsageError(f"{ref.name}: unsupported upscaler pipeline {layout.pipeline_class}")
    return method, kind, ref, layout


def _scale(job, method: str, kind: str | None, ref, layout) -> int:
    if method != "model":
        return job.scale or DEFAULT_SCALE
    native = model_scale(kind, layout)
    if (job.scale or native) != native:
        raise UsageError(
            f"{ref.name}: upscales by x{native} only, not x{job.scale}; use --scale {native},"
            " or --method tiled or lanczos"
        )
    return native


def model_scale(kind: str, layout) -> int:
    """The one factor a dedicated upscaler produces: x4 decodes input-size latents with its VAE; the
    latent upscaler doubles the latents."""
    return layout.vae_scale_factor if kind == "x4" else 2


def default_overlap(tile: int) -> int:
    return min(64, max(1, tile // 4))


def _applicable(job, method: str):
    """JOB with only what METHOD uses: no generation field an upscale does not take, the ones it takes at
    one value at that value, and the shift, cutoff and strength of tiled only (recorded as 1, 0, none)."""
    job = replace(job, **FIXED, **dict.fromkeys(NOT_TAKEN))
    return job if method == "tiled" else replace(job, shift=None, cfg_cutoff=None, strength=None)


def _settle_lanczos(job, reporter):
    """A lanczos job settled: no model, so no seed, steps, sampler or tiles (given ones are warned about)."""
    unused = [
        flag
        for flag, value in (
            ("--tile-size", job.tile_size),
            ("--overlap", job.overlap),
            ("--fidelity", job.fidelity),
            ("--steps", job.steps),
            ("--cfg", job.cfg),
            ("--scheduler", job.scheduler),
        )
        if value is not None
    ]
    if unused:
        reporter.warn(f"{', '.join(unused)}: not used by --method lanczos; ignored")
    job = replace(
        job, model=None, seed=None, steps=None, cfg=None, scheduler=None, tile_size=None, overlap=None, fidelity=None
    )
    job, sources = settle_settings(job, None, None)
    return _applicable(job, "lanczos"), sources


def _settle_model_run(job, ref, layout, plan: Plan):
    """A tiled or model job settled: its tiles planned into PLAN, its settings decided (the model's
    recommendations, settings.settle) and checked, its seed drawn."""
    _plan_tiles(job, ref, layout, plan)
    own = {"tile_size": plan.tile_size, "overlap": plan.overlap, "fidelity": job.fidelity or DEFAULT_FIDELITY}
    if plan.method == "tiled":
        check_model_settings(job, model_defaults(ref, layout), settings_source(ref))
        own["strength"] = job.strength if job.strength is not None else _family_strength(layout)
    if plan.kind == "x4":
        top = _max_noise_level(layout)
        own["noise_level"] = job.noise_level if job.noise_level is not None else min(DEFAULT_NOISE_LEVEL, top)
        if own["noise_level"] > top:
            raise UsageError(f"--noise-level must be at most {top} for {ref.name} (got {own['noise_level']})")
    sources = {k: "job" if getattr(job, k) is not None else "upscale" for k in own}
    settled, from_layers = settle_settings(replace(job, **own), ref, layout)
    settled = _applicable(settled, plan.method)
    settled = replace(settled, steps=int(settled.steps), cfg=float(settled.cfg))
    if plan.method == "tiled":
        settled = replace(settled, cfg_cutoff=float(settled.cfg_cutoff), shift=float(settled.shift))
        settled = _enough_steps(settled, asked=job.steps is not None, plan=plan)
    else:
        plan.steps_per_tile = settled.steps
        if plan.kind == "latent":
            _check_latent_sampler(settled.scheduler)
    return with_seed(settled), {**from_layers, **sources}


def _plan_tiles(job, ref, layout, plan: Plan) -> None:
    """PLAN's tile size, overlap and grid: output pixels at the model's native size (tiled), input pixels
    the upscaler sees (model)."""
    multiple = layout.vae_scale_factor if layout else 8
    if plan.method == "tiled":
        plan.unit = 1  # tiles in output pixels, at the model's native size
        default_tile = layout.native_size if layout else 512
        extent = plan.out_size
    else:
        plan.unit = plan.scale  # tiles in input pixels; the model sees the low-resolution tile
        default_tile = layout.sample_size if plan.kind == "x4" else max(multiple, layout.native_size // 2)
        extent = plan.source.size
    tile = job.tile_size or default_tile
    where = "output" if plan.method == "tiled" else "input"
    if tile % multiple or tile < multiple:
        low = max(multiple, tile - tile % multiple)
        raise UsageError(
            f"--tile-size {tile} is not valid for {ref.name}: use a multiple of its VAE factor {multiple} (e.g. {low})"
        )
    overlap = job.overlap if job.overlap is not None else default_overlap(tile)
    if overlap >= tile:
        raise UsageError(f"--overlap {overlap} must be smaller than --tile-size {tile} ({where} pixels)")
    plan.tile_size, plan.overlap = tile, overlap
    from diffcli.upscale.tiles import plan_grid

    plan.grid = plan_grid(extent[0], extent[1], tile, overlap, multiple)


def _family_strength(layout) -> float:
    """The tiled strength for the model's family (measured for the bundled model: docs/upscale.md), else 0.3."""
    from diffcli import families

    family = families.get(layout.family) if layout is not None else None
    return family.upscale_strength if family is not None and family.upscale_strength is not None else DEFAULT_STRENGTH


def _enough_steps(job, asked: bool, plan: Plan):
    """JOB with steps at which each tile runs at least one (int(steps x strength) >= 1): a few-step model's
    own steps (tiny-lcm: 4) may be too few for a low strength and are raised; steps ASKED for are an error."""
    from diffcli.timesteps import fewest_steps

    need = fewest_steps(job.strength)
    if not asked:
        job = replace(job, steps=max(job.steps, need))
    plan.steps_per_tile = min(int(job.steps * job.strength), job.steps)
    if plan.steps_per_tile < 1:
        raise UsageError(
            f"--steps {job.steps} at --strength {job.strength} runs no denoising step; use --steps {need} or more"
        )
    return job


def _check_latent_sampler(name: str) -> None:
    from diffcli.schedulers import SCHEDULERS, spec

    if spec(name).cls not in LATENT_SCHEDULERS:
        names = ", ".join(n for n, sp in SCHEDULERS.items() if sp.cls in LATENT_SCHEDULERS)
        raise UsageError(f"the latent upscaler needs a sigma-based sampler ({names}), not '{name}'")


def _max_noise_level(layout) -> int:
    try:
        return int(json.loads((Path(layout.path) / "model_index.json").read_text()).get("max_noise_level", 350))
    except (OSError, ValueError):
        return 350


# ---------------------------------------------------------------- running
def total_steps(prepared) -> int:
    """The steps its progress counts: tiles x steps per tile (0 for lanczos)."""
    return prepared.plan.total_steps


def load_options(prepared, load):
    """LOAD as an upscale loads its model: a dedicated upscaler decodes whole-image latents, so its VAE
    tiles; never compiled (`serve --compile` is for generation)."""
    return replace(load, vae_tiling=load.vae_tiling or prepared.plan.method == "model", compile=False)


def pipeline(base, prepared):
    """The pipeline each tile goes through: img2img on the model's components (tiled), the upscaler itself."""
    from diffcli.pipelines import task_pipeline

    return task_pipeline(base, "img2img") if prepared.plan.method == "tiled" else base


def make(pipe, prepared, reporter):
    """The upscaled image: lanczos (PIPE None: no model), or every tile through PIPE, blended."""
    plan = prepared.plan
    if plan.method == "lanczos":
        return lanczos(plan.source, plan.scale)
    return run_tiles(pipe, plan, reporter)


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

    from diffcli.upscale.tiles import BandBlender, tile_weights

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
def record(prepared) -> tuple[dict, dict, dict]:
    """(the record's job, the record's other entries, the result line's fields) of an upscaled image."""
    job, plan, ref = prepared.job, prepared.plan, prepared.ref
    recorded = {name: getattr(job, name) for name in RECORDED}
    recorded.update(
        model=ref.name if ref is not None else None,
        cfg_cutoff=plan.cfg_cutoff,
        shift=plan.shift,
        image=str(plan.source_path.resolve()),
    )
    result = {
        "seed": job.seed,
        "width": job.width,
        "height": job.height,
        "task": job.task,
        "model": recorded["model"],
        "method": plan.method,
        "scale": plan.scale,
    }
    return recorded, {"upscale": upscale_record(plan)}, result


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

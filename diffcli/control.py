"""ControlNet: `--control KIND:IMAGE[:SCALE[:START:END]]` specs, their models, preprocessors and pipelines.

A job names each control as a spec. KIND is a ControlNet (bundled name, hub repo id, diffusers folder or
single .safetensors file) or a short name (`seg`, `canny`, `depth`) that picks the default ControlNet of
the base model's family. IMAGE is the control map (or, with `--control-preprocess`, an image the map is
made from). SCALE (default 1) weighs its residuals; START and END (default 0 and 1) are the fraction of
the steps it acts on (diffusers' `control_guidance_start/end`). A settled job records each control as
"MODEL:ABSOLUTE_IMAGE:SCALE:START:END", so `--from` replays it.

Nothing at import time touches torch; the pipeline side (`load`, `pipeline`, `call_kwargs`) imports
diffusers when a model is loaded. The ControlNet pipeline is built from the base pipeline's own
components (diffusers' `from_pipe`): no weights are loaded twice.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from diffcli import loading
from diffcli.errors import RuntimeFailure, UsageError
from diffcli.models.controlnets import (
    BUNDLED_CONTROLNETS,
    UNION_CLASS,
    bundled_dir,
    controlnet_class,
    is_controlnet_dir,
)


def short_names() -> dict[str, dict[str, str]]:
    """ControlNet short name -> {family: its default ControlNet}, as the families declare them (the bundled
    model's: the one shipped beside it)."""
    from diffcli import families

    return families.controlnet_kinds()


# A union ControlNet (diffusers' ControlNetUnionModel) takes several kinds of map, each named by its control
# type: `KIND+TYPE`. The names and numbers are those of xinsir/controlnet-union-sdxl-1.0 (and its ProMax
# model, which adds tile and repaint); a number names a type directly.
UNION_MODES = {
    "openpose": 0,
    "pose": 0,
    "depth": 1,
    "hed": 2,
    "softedge": 2,
    "scribble": 2,
    "canny": 3,
    "lineart": 3,
    "mlsd": 3,
    "normal": 4,
    "seg": 5,
    "segment": 5,
    "tile": 6,
    "repaint": 7,
}
PREPROCESSORS = ("none", "canny", "seg")
CONTROLNET_CLASSES = ("ControlNetModel", "ControlNetUnionModel")
UNSUPPORTED_CLASSES = ("ControlNetXSAdapter", "SD3ControlNetModel", "FluxControlNetModel")
# the base pipeline's class -> its ControlNet pipeline per task
PIPELINES = {
    "StableDiffusionPipeline": {
        "txt2img": "StableDiffusionControlNetPipeline",
        "img2img": "StableDiffusionControlNetImg2ImgPipeline",
        "inpaint": "StableDiffusionControlNetInpaintPipeline",
    },
    "StableDiffusionXLPipeline": {
        "txt2img": "StableDiffusionXLControlNetPipeline",
        "img2img": "StableDiffusionXLControlNetImg2ImgPipeline",
        "inpaint": "StableDiffusionXLControlNetInpaintPipeline",
    },
}
PIPELINES["StableDiffusionImg2ImgPipeline"] = PIPELINES["StableDiffusionInpaintPipeline"] = PIPELINES[
    "StableDiffusionPipeline"
]
PIPELINES["StableDiffusionXLImg2ImgPipeline"] = PIPELINES["StableDiffusionXLInpaintPipeline"] = PIPELINES[
    "StableDiffusionXLPipeline"
]
# the same for a union ControlNet: diffusers has union pipelines for SDXL only
UNION_PIPELINES = {
    name: {
        "txt2img": "StableDiffusionXLControlNetUnionPipeline",
        "img2img": "StableDiffusionXLControlNetUnionImg2ImgPipeline",
        "inpaint": "StableDiffusionXLControlNetUnionInpaintPipeline",
    }
    for name in ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline")
}


@dataclass(frozen=True)
class Control:
    """One control of a job: its model (as recorded), image, scale, step range, and for a union ControlNet
    its control type (`mode`: a name of UNION_MODES or a number)."""

    model: str
    image: str
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    mode: str | None = None

    def spec(self) -> str:
        kind = f"{self.model}+{self.mode}" if self.mode else self.model
        return f"{kind}:{self.image}:{self.scale!r}:{self.start!r}:{self.end!r}"


def mode_index(mode: str) -> int:
    """The control type number of MODE (a name of UNION_MODES, or a number)."""
    return int(mode) if mode.isdigit() else UNION_MODES[mode]


def _split_mode(kind: str) -> tuple[str, str | None]:
    """'KIND+TYPE' -> (KIND, TYPE) when TYPE is a control type name or number; else (KIND, None). A KIND
    that names an existing file or folder as a whole (`./cn+2`) is that path, never a union type."""
    if "+" in kind and Path(kind).expanduser().exists():
        return kind, None
    model, sep, mode = kind.rpartition("+")
    mode = mode.strip().lower()
    if sep and model and (mode in UNION_MODES or mode.isdigit()):
        return model, mode
    return kind, None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value


def _drive(parts: list[str]) -> list[str]:
    """Rejoin a Windows drive letter ("C", "\\path"; on Windows also "C", "/path") that the split on ':' took apart."""
    import os

    seps = ("\\", "/") if os.name == "nt" else ("\\",)
    out: list[str] = []
    for part in parts:
        if out and len(out[-1]) == 1 and out[-1].isalpha() and part[:1] in seps:
            out[-1] = f"{out[-1]}:{part}"
        else:
            out.append(part)
    return out


def parse_spec(spec: str) -> Control:
    """'KIND:IMAGE[:SCALE[:START:END]]' -> Control (usage errors name the spec)."""
    text = str(spec).strip()
    parts = text.split(":")
    numbers = 0
    while numbers < 3 and len(parts) - numbers > 2 and _number(parts[len(parts) - 1 - numbers]) is not None:
        numbers += 1
    if numbers == 2:  # KIND:IMAGE:START:END is not a form: one number is SCALE, three are SCALE:START:END
        numbers = 1 if len(parts) - 2 > 2 else 0
        if numbers == 0:
            raise UsageError(f"--control {spec}: give SCALE alone or SCALE:START:END after the image")
    head = _drive(parts[: len(parts) - numbers])
    values = [float(p) for p in parts[len(parts) - numbers :]]
    if len(head) < 2 or not head[0] or not ":".join(head[1:]):
        raise UsageError(
            f"--control '{spec}': use KIND:IMAGE[:SCALE[:START:END]], e.g. seg:map.png or canny:edges.png:0.8"
        )
    scale = values[0] if values else 1.0
    start, end = (values[1], values[2]) if len(values) == 3 else (0.0, 1.0)
    if not math.isfinite(scale) or scale < 0:
        raise UsageError(f"--control {spec}: the scale must be a finite number, 0 or more (got {values[0]})")
    if not (0 <= start < end <= 1):
        raise UsageError(f"--control {spec}: START and END must satisfy 0 <= START < END <= 1 (got {start}, {end})")
    model, mode = _split_mode(head[0])
    return Control(model=model, image=":".join(head[1:]), scale=scale, start=start, end=end, mode=mode)


def check_job(job) -> None:
    """Model-free checks of a job's controls (jobs.validate calls it)."""
    for spec in job.control or ():
        parse_spec(spec)
    if job.control_preprocess is not None:
        if job.control_preprocess not in PREPROCESSORS:
            raise UsageError(
                f"--control-preprocess must be one of {', '.join(PREPROCESSORS)} (got '{job.control_preprocess}')"
            )
        if not job.control:
            raise UsageError("--control-preprocess needs a --control")


# ---------------------------------------------------------- finding ControlNet models (recognising: models.controlnets)
def _read_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class ControlModel:
    """A ControlNet present on this machine: what the job records, where it is, and how it loads."""

    name: str  # recorded in the job: a bundled name, a hub repo id, or an absolute path
    path: Path
    kind: str = "diffusers"  # diffusers | single_file


def resolve_model(name: str, *, offline: bool = False, allow_pickle: bool = False, progress="quiet") -> ControlModel:
    """A ControlNet name (bundled name, folder, .safetensors file, hub repo id) as a local ControlModel."""
    from diffcli.text import shown

    if name in BUNDLED_CONTROLNETS:
        path = bundled_dir(name)
        if not is_controlnet_dir(path):
            raise RuntimeFailure(f"the bundled ControlNet {name} is not installed ({path} is missing)")
        return ControlModel(name, path)
    if name.lower().startswith(("http://", "https://")):  # a single-file ControlNet by URL, fetched once
        from diffcli.models import names, urls
        from diffcli.models.resolve import offline_requested

        found = urls.find_local(name)
        if found is None:
            if offline_requested(offline):
                raise UsageError(
                    f"ControlNet '{names.redact_url(name)}' is not downloaded and offline mode is on; "
                    f"run `diffcli models pull URL` while online"
                )
            found = urls.pull(name, allow_pickle=allow_pickle, progress=progress)
        return ControlModel(names.redact_url(name), Path(found[0]), kind="single_file")
    given = Path(name).expanduser()
    if given.is_dir():
        if not is_controlnet_dir(given):
            raise UsageError(
                f"--control {shown(name)}: not a ControlNet folder (its config.json names no ControlNet class)"
            )
        return ControlModel(str(given.resolve()), given.resolve())
    if given.is_file():
        if given.suffix.lower() != ".safetensors":
            raise UsageError(f"--control {shown(name)}: a single-file ControlNet must be a .safetensors file")
        return ControlModel(str(given.resolve()), given.resolve(), kind="single_file")
    if name.startswith((".", "/", "~")) or "/" not in name:
        raise UsageError(
            f"--control {shown(name)}: no such ControlNet: give a short name "
            f"({', '.join(short_names())}), a hub repo id (org/name), a folder or a .safetensors file"
        )
    from diffcli.models.resolve import local_repo

    path = local_repo(
        name,
        offline=offline,
        allow_pickle=allow_pickle,
        progress=progress,
        not_here=f"ControlNet '{name}' is not downloaded and offline mode is on; run "
        f"`diffcli models pull {name}` while online",
    )
    return ControlModel(name, path)


def _cross_attention_dim(config: dict):
    dim = config.get("cross_attention_dim")
    return tuple(dim) if isinstance(dim, list) else dim


def check_fits(model: ControlModel, base_ref, layout, mode: str | None = None) -> None:
    """A usage error when the ControlNet cannot work with the base model, or MODE (a control type) does not
    fit it: a union ControlNet needs one, any other takes none (read from configs, no weights)."""
    from diffcli.text import shown

    if model.kind != "diffusers":
        if mode is not None:
            raise UsageError(
                f"--control {shown(model.name + '+' + mode)}: a control type is for a union ControlNet, "
                f"which diffcli loads from a diffusers folder or hub repo, not a single file"
            )
        _check_file_fits(model, base_ref, layout)
        return
    cls = controlnet_class(model.path)
    if cls in UNSUPPORTED_CLASSES or cls not in CONTROLNET_CLASSES:
        raise UsageError(
            f"--control {shown(model.name)}: a {cls} is not supported (diffcli runs ControlNetModel "
            f"ControlNets with SD 1.x, 2.x, SDXL and the bundled model, and union ControlNets with SDXL)"
        )
    own = _read_config(model.path / "config.json")
    if cls == UNION_CLASS:
        count = own.get("num_control_type", 6)
        if mode is None:
            raise UsageError(
                f"--control {shown(model.name)}: a union ControlNet needs the control type of its map: "
                f"KIND+TYPE:IMAGE, TYPE one of {', '.join(UNION_MODES)} or a number below {count}"
            )
        if mode_index(mode) >= count:
            raise UsageError(
                f"--control {shown(model.name + '+' + mode)}: control type {mode_index(mode)} is not "
                f"one of this union ControlNet's {count} (0 to {count - 1})"
            )
    elif mode is not None:
        raise UsageError(
            f"--control {shown(model.name + '+' + mode)}: a control type is for a union ControlNet; "
            f"this is a {cls}, give it as KIND:IMAGE"
        )
    if layout is None or getattr(base_ref, "kind", "diffusers") != "diffusers":
        return
    if layout.pipeline_class not in PIPELINES:
        raise UsageError(
            f"--control: {base_ref.name} is a {layout.family} model ({layout.pipeline_class}); "
            f"ControlNets work with SD 1.x, 2.x, SDXL and the bundled model"
        )
    if cls == UNION_CLASS and layout.pipeline_class not in UNION_PIPELINES:
        raise UsageError(
            f"--control {shown(model.name)}: union ControlNets work with SDXL models only (diffusers "
            f"has no union pipeline for {layout.family} models)"
        )
    base_dim = _cross_attention_dim(_read_config(Path(base_ref.path) / "unet" / "config.json"))
    dim = _cross_attention_dim(own)
    if base_dim is not None and dim is not None and dim != base_dim:
        raise UsageError(
            f"--control {shown(model.name)}: this ControlNet is made for another model family "
            f"(text features of size {dim}; {base_ref.name} ({layout.family}) has {base_dim})"
        )


def _file_facts(path) -> dict:
    """What a single-file ControlNet's header says of its shape: {key without "control_model.": shape}."""
    from diffcli.models.checkpoint_info import read_header, tensors

    return {k.removeprefix("control_model."): v.get("shape") for k, v in tensors(read_header(path)).items()}


def _check_file_fits(model: ControlModel, base_ref, layout) -> None:
    """A usage error when a single-file ControlNet's text features (its cross-attention keys' width) are
    not the base UNet's size: a ControlNet for another family (header only, no weights)."""
    from diffcli.text import shown

    if layout is None or getattr(base_ref, "kind", "diffusers") != "diffusers":
        return
    base_dim = _cross_attention_dim(_read_config(Path(base_ref.path) / "unet" / "config.json"))
    dims = {shape[1] for k, shape in _file_facts(model.path).items() if k.endswith("attn2.to_k.weight") and shape}
    if isinstance(base_dim, int) and dims and dims != {base_dim}:
        raise UsageError(
            f"--control {shown(model.name)}: this ControlNet is made for another model family "
            f"(text features of size {max(dims)}; {base_ref.name} ({layout.family}) has {base_dim})"
        )


def single_file_config(path, unet) -> dict:
    """A diffusers config for the single-file ControlNet at PATH (the original lllyasviel/A1111 key layout or
    diffusers' keys) made for the base model's UNET, so that no config is fetched from the hub: the UNet's
    shape as diffusers' `ControlNetModel.from_unet` copies it (built on empty weights, nothing allocated),
    with what the file's header says itself: its latent and hint channels and its hint embedding widths."""
    import re

    from accelerate import init_empty_weights
    from diffusers import ControlNetModel

    facts = _file_facts(path)
    hint = {}  # index -> out channels of the hint embedding's convolutions, in order
    for key, shape in facts.items():
        if m := re.fullmatch(r"input_hint_block\.(\d+)\.weight", key):
            hint[int(m[1])] = shape
        elif m := re.fullmatch(r"controlnet_cond_embedding\.(conv_in|blocks\.(\d+)|conv_out)\.weight", key):
            hint[{"conv_in": -1, "conv_out": 10**6}.get(m[1], int(m[2] or 0))] = shape
    convs = [hint[i] for i in sorted(hint)]
    if len(convs) < 3 or len(convs) % 2:
        raise RuntimeFailure(
            f"cannot load ControlNet {path}: its hint embedding is not a ControlNet's ({len(convs)} convolutions)"
        )
    widths = tuple([convs[0][0]] + [c[0] for c in convs[1:-1]][1::2])  # conv_in, then each stride-2 block
    first = facts.get("input_blocks.0.0.weight") or facts.get("conv_in.weight")
    with init_empty_weights():
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=widths, load_weights_from_unet=False)
    config = {k: v for k, v in dict(net.config).items() if not k.startswith("_")}
    config.update(_class_name="ControlNetModel", conditioning_channels=convs[0][1])
    if first:
        config["in_channels"] = first[1]  # 4 for an SD ControlNet, also beside a 9-channel inpainting UNet
    return config


def default_model(kind: str, family: str | None) -> str:
    """The family's ControlNet for short name KIND."""
    table = short_names()[kind]
    if family not in table:
        have = ", ".join(sorted(table))
        raise UsageError(
            f"--control {kind}: there is no default {kind} ControlNet for {family or 'this'} models "
            f"(there is one for: {have}); name a ControlNet (repo id, folder or file) instead"
        )
    return table[family]


def settle(job, ref, layout, *, offline: bool = False, allow_pickle: bool = False, progress="quiet"):
    """JOB with each control's model found (short names replaced by the family's model) and its image
    checked and recorded by absolute path; the models' checks need configs only, never weights."""
    from dataclasses import replace

    from diffcli.images import load_rgb
    from diffcli.text import shown

    if not job.control:
        return job
    settled = []
    for spec in job.control:
        c = parse_spec(spec)
        image = Path(c.image).expanduser()  # the image first: a missing one fails before any download
        if not image.is_file():
            raise UsageError(f"--control {shown(spec)}: no such image file: {shown(c.image)}")
        load_rgb(image)  # a usage error when it is not an image
        name = model_name(spec, ref, layout)
        model = resolve_model(name, offline=offline, allow_pickle=allow_pickle, progress=progress)
        check_fits(model, ref, layout, c.mode)
        settled.append(Control(model.name, str(image.resolve()), c.scale, c.start, c.end, c.mode).spec())
    job = replace(job, control=tuple(settled))
    _check_union(job)
    if is_union(job) and layout is not None and layout.is_inpaint:
        raise UsageError(
            f"--control: diffusers' union ControlNet inpaint pipeline takes a regular (4-channel) UNet, "
            f"and {ref.name} is an inpainting model; use its base model"
        )
    return job


def model_name(spec: str, ref, layout) -> str:
    """The ControlNet a control SPEC names for REF's model (a short name is the family's default model)."""
    c = parse_spec(spec)
    if c.model not in short_names():
        return c.model
    family = layout.family if layout is not None else getattr(ref, "family", None)  # bundled: "bundled"
    return default_model(c.model, family)


def is_union(job) -> bool:
    """Whether a job's controls are a union ControlNet's (only those carry a control type; settled or not)."""
    return any(parse_spec(s).mode is not None for s in job.control or ())


def _check_union(job) -> None:
    """A settled job's union controls: one union model, its control types in one call (diffusers' union
    pipelines take one ControlNetUnionModel with several maps and types), nothing else beside it."""
    if not is_union(job):
        return
    controls = [parse_spec(s) for s in job.control]
    if any(c.mode is None for c in controls) or len({c.model for c in controls}) > 1:
        raise UsageError(
            "--control: a union ControlNet takes all the maps of a job (KIND+TYPE:IMAGE for each); "
            "it cannot be combined with other ControlNets"
        )
    if job.cfg_cutoff:
        raise UsageError(
            "--cfg-cutoff does not work with a union ControlNet yet (its pipeline keeps the control "
            "types for both guidance halves); leave it at 0"
        )


def records(job) -> list[dict]:
    """What an image records about its controls (beside the job's settled specs)."""
    out = []
    for spec in job.control or ():
        c = parse_spec(spec)
        out.append(
            {
                "model": c.model,
                "name": Path(c.model).name,
                "image": c.image,
                "scale": c.scale,
                "start": c.start,
                "end": c.end,
                "preprocess": job.control_preprocess or "none",
                **({"mode": c.mode} if c.mode is not None else {}),
            }
        )
    return out


# ---------------------------------------------------------------- preprocessors (no model downloads)
def canny(image, low: float = 0.1, high: float = 0.2, sigma: float = 1.0):
    """Canny edges of IMAGE (PIL) as a white-on-black RGB image of the same size.

    Gaussian smoothing, Sobel gradients, non-maximum suppression along the gradient direction, and
    hysteresis between LOW and HIGH (fractions of the largest gradient) - Canny 1986, with scipy."""
    import numpy as np
    from PIL import Image
    from scipy import ndimage

    gray = np.asarray(image.convert("L"), np.float32) / 255.0
    smooth = ndimage.gaussian_filter(gray, sigma) if sigma > 0 else gray
    gx, gy = ndimage.sobel(smooth, axis=1), ndimage.sobel(smooth, axis=0)
    mag = np.hypot(gx, gy)
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    sector = np.round(angle / 45.0).astype(int) % 4  # 0: horizontal gradient, 1: 45°, 2: vertical, 3: 135°
    padded = np.pad(mag, 1)
    h, w = mag.shape
    offsets = {0: (0, 1), 1: (1, 1), 2: (1, 0), 3: (1, -1)}
    keep = np.zeros_like(mag, bool)
    for s, (dy, dx) in offsets.items():
        a = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        b = padded[1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]
        keep |= (sector == s) & (mag >= a) & (mag >= b)
    thin = np.where(keep, mag, 0.0)
    peak = float(thin.max()) or 1.0
    strong, weak = thin >= high * peak, thin >= low * peak
    labels, count = ndimage.label(weak, structure=np.ones((3, 3)))
    connected = np.zeros(count + 1, bool)
    connected[np.unique(labels[strong])] = True
    connected[0] = False
    edges = connected[labels] & (mag > 1e-6)
    out = (edges * 255).astype(np.uint8)
    return Image.fromarray(np.repeat(out[:, :, None], 3, axis=2), "RGB")


def segment(image):
    """The bundled model's scene segmenter: the object's silhouette, white on black, at IMAGE's size."""
    import numpy as np
    from PIL import Image

    from diffcli.bundled.segmenter import WEIGHTS_DIR, load_segmenter

    if not (WEIGHTS_DIR / "model.safetensors").is_file():
        raise RuntimeFailure(f"the bundled segmenter is not installed ({WEIGHTS_DIR} is missing)")
    mask = load_segmenter().masks([image])[0]
    m = Image.fromarray((np.clip(mask, 0, 1) * 255).round().astype(np.uint8), "L").resize(image.size, Image.BILINEAR)
    m = m.point(lambda v: 255 if v >= 128 else 0)
    return Image.merge("RGB", (m, m, m))


def preprocess(image, kind: str | None):
    """The control map made from IMAGE (PIL RGB) by preprocessor KIND (none: IMAGE itself)."""
    if kind in (None, "none"):
        return image
    if kind == "canny":
        return canny(image)
    if kind == "seg":
        return segment(image)
    raise UsageError(f"unknown preprocessor '{kind}' (use {', '.join(PREPROCESSORS)})")


def control_images(job) -> list:
    """The control maps of a settled job, each preprocessed as the job says."""
    from diffcli.images import load_rgb

    return [preprocess(load_rgb(parse_spec(s).image), job.control_preprocess) for s in job.control or ()]


# ---------------------------------------------------------------- loading and pipelines (torch)
_MODELS: dict[tuple, object] = {}
_PIPES: dict[tuple, object] = {}


def load(name: str, choice, unet=None):
    """The ControlNet NAME (as a settled job records it) on CHOICE's device and dtype, once per process. A
    single file gets its config from the base model's UNET (single_file_config): nothing is fetched."""
    model = resolve_model(name, offline=True)
    shape = json.dumps(dict(unet.config), sort_keys=True, default=str) if model.kind == "single_file" else None
    key = (name, choice.device, choice.dtype, shape)
    if key in _MODELS:
        return _MODELS[key]
    import tempfile

    import diffusers
    from diffusers import ControlNetModel

    from diffcli.device import torch_dtype

    dtype = torch_dtype(choice.dtype)
    try:
        if model.kind == "single_file":
            with tempfile.TemporaryDirectory(prefix="diffcli-controlnet-") as folder:
                (Path(folder) / "config.json").write_text(json.dumps(single_file_config(model.path, unet)))
                net = loading.from_single_file(
                    ControlNetModel, str(model.path), config=folder, torch_dtype=dtype, local_files_only=True
                )
        else:  # ControlNetModel or ControlNetUnionModel, as its config says
            cls = getattr(diffusers, controlnet_class(model.path) or "ControlNetModel")
            net = loading.from_pretrained(
                cls, str(model.path), torch_dtype=dtype, use_safetensors=True, local_files_only=True
            )
    except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: weights of another shape than the config's
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeFailure(f"cannot load ControlNet {name}: {text}") from None
    net = net.to(choice.device).eval()
    _MODELS[key] = net
    return net


def pipeline(base, task: str, names: list[str], choice):
    """BASE's ControlNet pipeline for TASK with the ControlNets NAMES, sharing BASE's components."""
    import diffusers

    from diffcli.schedulers import ORIGINAL_SCHEDULER

    key = (id(base), task, tuple(names), choice.device, choice.dtype)
    if key in _PIPES and _PIPES[key][0] is base:
        return _PIPES[key][1]
    union = type(load(names[0], choice, base.unet)).__name__ == UNION_CLASS
    classes = (UNION_PIPELINES if union else PIPELINES).get(type(base).__name__)
    if classes is None:
        raise UsageError(
            f"ControlNets work with SD 1.x, 2.x, SDXL and the bundled model (union ControlNets with "
            f"SDXL), not {type(base).__name__}"
        )
    nets = [load(n, choice, base.unet) for n in (names[:1] if union else names)]  # one union model: every map
    cls = getattr(diffusers, classes[task])
    pipe = cls.from_pipe(base, controlnet=nets[0] if len(nets) == 1 else nets)
    pipe.set_progress_bar_config(disable=True)
    setattr(pipe, ORIGINAL_SCHEDULER, getattr(base, ORIGINAL_SCHEDULER, dict(base.scheduler.config)))
    _PIPES[key] = (base, pipe)
    return pipe


def call_kwargs(job, images: list) -> dict:
    """The ControlNet arguments of one pipeline call for a settled JOB and its control maps IMAGES."""
    controls = [parse_spec(s) for s in job.control]
    if controls[0].mode is not None:  # one union ControlNet: every map and its control type in one call
        return {
            "control_image": list(images),
            "control_mode": [mode_index(c.mode) for c in controls],
            "controlnet_conditioning_scale": [c.scale for c in controls],
            "control_guidance_start": [c.start for c in controls],
            "control_guidance_end": [c.end for c in controls],
        }
    one = len(controls) == 1
    pick = (lambda v: v[0]) if one else (lambda v: v)
    kwargs = {
        "controlnet_conditioning_scale": pick([c.scale for c in controls]),
        "control_guidance_start": pick([c.start for c in controls]),
        "control_guidance_end": pick([c.end for c in controls]),
    }
    maps = pick(images)
    if job.task == "txt2img":
        kwargs["image"] = maps
    else:
        kwargs["control_image"] = maps
    return kwargs


def forget(base) -> None:
    """Drop the ControlNet pipelines built on BASE (pipelines.release: its memory can go)."""
    for key in [k for k, (b, _) in _PIPES.items() if b is base]:
        del _PIPES[key]


def release() -> None:
    """Forget every loaded ControlNet and ControlNet pipeline."""
    _MODELS.clear()
    _PIPES.clear()

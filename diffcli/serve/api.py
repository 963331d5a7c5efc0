"""Requests of the HTTP API turned into Jobs, and results into responses (see http.py).

AUTOMATIC1111 (`/sdapi/v1/txt2img`, `/sdapi/v1/img2img`) and OpenAI (`/v1/images/generations`) bodies
are type-checked here under their own field names (a Job field's type is the Job's own, diffcli.schema, converted
by the one function every door uses); ranges and combinations are then checked by
the engine exactly as a command's flags are (jobs.validate, run.settle). A request never names a
file: input images come base64 in the body, models by name only.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import threading
from pathlib import Path

from diffcli import schema
from diffcli.errors import UsageError


class HttpError(Exception):
    def __init__(self, status: int, message: str, kind: str = "UsageError") -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


# -- requests to Jobs ---------------------------------------------------------------------------------

_A1111_FIELDS = {  # A1111 name -> Job field (its type: the Job's)
    "prompt": "prompt",
    "negative_prompt": "negative",
    "steps": "steps",
    "cfg_scale": "cfg",
    "width": "width",
    "height": "height",
    "seed": "seed",
    "denoising_strength": "strength",
    "mask_blur": "mask_blur",
}
_A1111_OWN = {
    "batch_size",
    "n_iter",
    "sampler_name",
    "sampler_index",
    "scheduler",
    "init_images",
    "mask",
    "override_settings",
    "save_images",
    "send_images",
}
# fields A1111 clients send with every request: accepted when they ask for nothing (their default,
# or empty/zero/false); any other value is refused rather than silently ignored
_A1111_DEFAULTS = {
    "s_noise": 1,
    "override_settings_restore_afterwards": True,
    "inpaint_full_res": True,
    "initial_noise_multiplier": 1,
    "resize_mode": 0,
    "inpainting_fill": 1,
    "seed_resize_from_h": -1,
    "seed_resize_from_w": -1,
    "subseed": -1,
    "eta": 1,
    "image_cfg_scale": 1.5,
}


def _unprocessable(message: str) -> HttpError:
    return HttpError(422, message)


def typed(name: str, value, kind):
    """VALUE of the request's field NAME as KIND (a type, or a Job field's schema.Wire): schema.convert, its
    error a 422 reply."""
    return schema.convert(name, value, kind, error=_unprocessable)


def _job_kind(field_name: str) -> schema.Wire:
    from diffcli.jobs import Job

    return schema.wire_types(Job)[field_name]


def _asks_nothing(name: str, value) -> bool:
    """Whether an unsupported field's VALUE leaves everything as it is (its A1111 default, or empty)."""
    if name in _A1111_DEFAULTS and value == _A1111_DEFAULTS[name] and not isinstance(value, bool):
        return True
    if isinstance(value, bool):
        return value is False or _A1111_DEFAULTS.get(name) is value
    if isinstance(value, (int, float)):
        return value in (0, -1)
    return value is None or value in ("", [], {})


def _check_unknown(body: dict, known: set[str]) -> None:
    for name, value in body.items():
        if name not in known and not _asks_nothing(name, value):
            raise HttpError(422, f"field '{name}' is not supported (value {json.dumps(value)[:60]})")


def scheduler_of(sampler: str | None, schedule: str | None) -> str | None:
    """Our scheduler name for an A1111 sampler name (and its separate schedule type, e.g. Karras): the
    first entry of that name. A name several entries share ("Euler": euler, flow-euler) is decided by the
    model once it is resolved (RunOptions.a1111_sampler, schedulers.by_a1111_name)."""
    from diffcli.schedulers import SCHEDULERS

    if sampler in (None, ""):
        return None
    wanted = sampler if schedule in (None, "", "Automatic", "automatic") else f"{sampler} {schedule}"
    for name, spec in SCHEDULERS.items():
        if wanted.lower() in (name, spec.a1111.lower()):
            return name
    names = ", ".join(s.a1111 for s in SCHEDULERS.values())
    raise HttpError(422, f"unknown sampler '{wanted}'; choose one of: {names}")


def model_of(name) -> str | None:
    """A model a request may name: shipped, an alias or a hub id (never a path or URL)."""
    if name is None:
        return None
    name = typed("model", name, str)
    name = re.sub(r"\s*\[[0-9a-fA-F]{6,}\]$", "", name)  # A1111 titles: "name [hash]"
    from diffcli.models.names import CHECKPOINT_EXT, parse

    # decided on the text alone, so the answer never tells a client what exists on the server's disk
    looks_like_path = (
        name.startswith((".", "/", "~", "\\"))
        or os.path.isabs(name)
        or "://" in name
        or "\\" in name
        or ".." in name.split("/")
        or name.lower().endswith(CHECKPOINT_EXT)
    )
    if looks_like_path:
        raise HttpError(422, f"model '{name}': name a model (see /sdapi/v1/sd-models), not a path or URL")
    try:
        source = parse(name, paths=False)  # never looked for in the server's working directory
    except UsageError as exc:
        raise HttpError(422, str(exc)) from None
    if source.kind not in ("bundled", "alias", "hub"):
        raise HttpError(422, f"model '{name}': name a model (see /sdapi/v1/sd-models), not a path or URL")
    return name


def check_lora_tags(*texts: str | None) -> None:
    """A request's `<lora:NAME:W>` prompt tags may name LoRAs of the server's LoRA folder only, never a path
    (a request reads no file outside what the server was given)."""
    from diffcli.prompts import take_lora_tags

    for text in texts:
        for spec in take_lora_tags(text or "")[1]:
            name = spec.rpartition(":")[0] if ":" in spec else spec
            if any(c in name for c in "/\\") or name.startswith((".", "~")) or os.path.isabs(name):
                raise HttpError(422, f"<lora:{name}>: name a LoRA of the server's LoRA folder, not a path")


class Inputs:
    """Input images of one request, written where the engine reads them (a private folder of its own in
    the output directory's `.inputs`) and removed after the job."""

    def __init__(self, output_dir: str) -> None:
        self.parent = Path(output_dir) / ".inputs"
        self.directory = self.parent / secrets.token_hex(8)
        self.paths: list[Path] = []
        self.names: dict[str, str] = {}  # path -> the request field that carried it (public_message)

    def _make_directory(self) -> None:
        """This request's folder, once. Another request's remove() may take the shared parent away (while
        empty) in between: then it is made again. (Once this folder is in it, the parent stays.)"""
        if self.directory.is_dir():
            return
        for attempt in range(10):
            try:
                self.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self.directory.mkdir(mode=0o700)
                return
            except (FileNotFoundError, FileExistsError):  # (pathlib's exist_ok raises when it went meanwhile)
                if attempt == 9:
                    raise

    def add(self, name: str, data) -> str:
        """Write NAME's base64 DATA (an A1111 field) as an input file; its path."""
        text = typed(name, data, str)
        if text.startswith("data:"):
            text = text.partition(",")[2]
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise HttpError(422, f"'{name}' is not base64 image data") from None
        return self.add_bytes(raw, name)

    def add_bytes(self, raw: bytes, name: str) -> str:
        """Write RAW (the image a request sent as NAME) as an input file, once its header passed
        check_image; its path."""
        check_image(raw, name)
        self._make_directory()
        path = self.directory / f"{secrets.token_hex(8)}.img"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        self.paths.append(path)
        self.names[str(path)] = name
        return str(path)

    def remove(self) -> None:
        for path in self.paths:
            path.unlink(missing_ok=True)
        for directory in (self.directory, self.parent):  # the parent once no other request has a folder there
            try:
                directory.rmdir()
            except OSError:
                pass


def max_input_pixels() -> int:
    """The most pixels an image a request carries may have: Pillow's decompression-bomb limit
    (Image.MAX_IMAGE_PIXELS, 89,478,485), the one commands apply to their input files too."""
    from PIL import Image

    from diffcli.limits import MAX_SIDE

    return Image.MAX_IMAGE_PIXELS or MAX_SIDE * MAX_SIDE


def check_image(raw: bytes, name: str) -> None:
    """Refuse RAW, an image a request carries as NAME, that is no image of a supported format or whose
    header declares more than max_input_pixels(): read from its header alone, before anything decodes it
    (a few hundred bytes of PNG can declare 13000x13000 pixels, 676 MB once decoded)."""
    import io

    from PIL import Image, UnidentifiedImageError

    from diffcli.images import SUPPORTED_INPUT

    limit = max_input_pixels()
    try:
        with Image.open(io.BytesIO(raw)) as img:  # lazy: the header only
            width, height, fmt = *img.size, img.format
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # over twice Pillow's limit
        raise HttpError(422, f"'{name}' is over the limit of {limit} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise HttpError(422, f"'{name}' is not an image in a supported format ({', '.join(SUPPORTED_INPUT)})") from None
    if fmt not in SUPPORTED_INPUT:
        raise HttpError(422, f"'{name}' is not an image in a supported format ({', '.join(SUPPORTED_INPUT)})")
    if width * height > limit:
        raise HttpError(422, f"'{name}' is {width}x{height} pixels, over the limit of {limit}")


def a1111_job(body: dict, task: str, inputs: Inputs):
    """The Job an A1111 txt2img/img2img body describes (types checked here, values by the engine)."""
    from diffcli.jobs import Job

    known = set(_A1111_FIELDS) | _A1111_OWN
    values = {}
    if task == "txt2img":
        known -= {"init_images", "mask", "denoising_strength", "mask_blur"}
        if body.get("enable_hr") in (None, False):  # the hires pass's settings, sent by clients with every request
            body = {
                k: v for k, v in body.items() if not k.startswith(("hr_", "firstphase_")) and k != "denoising_strength"
            }
        else:  # the hires fix (diffcli.hires): its fields become the Job's
            values, body = _hires_values(body)
            known |= {"enable_hr"}
    _check_unknown(body, known)
    for name, field_name in _A1111_FIELDS.items():
        if body.get(name) is not None and name in known:
            values[field_name] = typed(name, body[name], _job_kind(field_name))
    if values.get("seed") == -1:
        values.pop("seed")
    batch = typed("batch_size", body.get("batch_size", 1), int)
    n_iter = typed("n_iter", body.get("n_iter", 1), int)
    if batch < 1 or n_iter < 1:
        raise HttpError(422, "batch_size and n_iter must be at least 1")
    values.update(num_images=batch * n_iter, batch_size=batch)
    sampler = body.get("sampler_name") or body.get("sampler_index")
    schedule = body.get("scheduler")
    values["scheduler"] = scheduler_of(
        typed("sampler_name", sampler, str) if sampler is not None else None,
        typed("scheduler", schedule, str) if schedule is not None else None,
    )
    overrides = typed("override_settings", body.get("override_settings") or {}, dict)
    unknown = sorted(k for k, v in overrides.items() if k != "sd_model_checkpoint" and not _asks_nothing(k, v))
    if unknown:
        raise HttpError(422, f"override_settings: {', '.join(unknown)} not supported")
    values["model"] = model_of(overrides.get("sd_model_checkpoint"))
    if task == "img2img":
        images = typed("init_images", body.get("init_images"), list) if body.get("init_images") is not None else []
        if len(images) != 1:
            raise HttpError(422, "img2img takes exactly one image in 'init_images'")
        values["image"] = inputs.add("init_images[0]", images[0])
        if body.get("mask") is not None:
            values["mask"] = inputs.add("mask", body["mask"])
            task = "inpaint"
    values["prompt"] = values.get("prompt", "")
    check_lora_tags(values["prompt"], values.get("negative"))
    return Job(task=task, **{k: v for k, v in values.items() if v is not None})


def _hires_values(body: dict) -> tuple[dict, dict]:
    """(the Job's hires fields, BODY less the fields they came from) for an A1111 txt2img request with
    enable_hr: hr_scale, or hr_resize_x/hr_resize_y (one may be 0: from the aspect); hr_upscaler by its A1111
    name (Latent, Lanczos, Nearest, None); hr_second_pass_steps (0: the job's steps); denoising_strength."""
    from diffcli import hires

    typed("enable_hr", body["enable_hr"], bool)
    resize = [typed(n, body.get(n) or 0, int) for n in ("hr_resize_x", "hr_resize_y")]
    values: dict = {}
    if any(resize):
        values["hires_size"] = f"{resize[0]}x{resize[1]}"
    else:
        values["hires"] = typed("hr_scale", body.get("hr_scale", 2), _job_kind("hires"))
    if body.get("hr_upscaler") is not None:
        try:
            values["hires_upscaler"] = hires.from_a1111(typed("hr_upscaler", body["hr_upscaler"], str))
        except UsageError as exc:
            raise HttpError(422, str(exc)) from None
    if body.get("hr_second_pass_steps"):
        values["hires_steps"] = typed("hr_second_pass_steps", body["hr_second_pass_steps"], int)
    if body.get("denoising_strength") is not None:
        values["hires_strength"] = typed("denoising_strength", body["denoising_strength"], _job_kind("hires_strength"))
    taken = {"hr_scale", "hr_resize_x", "hr_resize_y", "hr_upscaler", "hr_second_pass_steps", "denoising_strength"}
    return {k: v for k, v in values.items() if v is not None}, {k: v for k, v in body.items() if k not in taken}


# diffcli's own fields an OpenAI request may add (extra_body in the openai library): what makes an
# image repeatable; the engine checks their values as it checks the flags
_DIFFCLI_EXTRAS = {  # request name -> Job field (its type: the Job's)
    "seed": "seed",
    "steps": "steps",
    "cfg": "cfg",
    "negative_prompt": "negative",
    "cache": "cache",
    "vae_decoder": "vae_decoder",
}


def vae_decoder_of(name: str) -> str:
    """A decoder a request may name: full or tiny (the family's, from the hub cache); never a folder or
    another repo (a name that could be a folder would let a request probe the server's disk)."""
    from diffcli.vae_decoder import FULL, TINY

    if name not in (FULL, TINY):
        raise HttpError(422, f"vae_decoder '{name[:80]}': use full or tiny")
    return name


def openai_job(body: dict):
    from diffcli.jobs import Job

    _check_unknown(
        {
            k: v
            for k, v in body.items()
            if not (
                k in ("quality", "style", "background", "moderation", "output_format")
                and v in ("auto", "standard", "png")
            )
        },
        {"prompt", "n", "size", "model", "response_format", "user"} | set(_DIFFCLI_EXTRAS),
    )
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise HttpError(400, "'prompt' is required (a string)")
    fmt = body.get("response_format", "b64_json")
    if fmt != "b64_json":
        raise HttpError(400, "only response_format 'b64_json' is supported")
    values = {"prompt": prompt, "num_images": typed("n", body.get("n", 1), int)}
    size = body.get("size")
    if size not in (None, "auto"):
        match = re.fullmatch(r"(\d{1,6})x(\d{1,6})", typed("size", size, str))
        if match is None:
            raise HttpError(400, f"invalid size '{size}'; use WIDTHxHEIGHT, e.g. 512x512")
        values.update(width=int(match.group(1)), height=int(match.group(2)))
    values["model"] = model_of(body.get("model"))
    for name, field_name in _DIFFCLI_EXTRAS.items():
        if body.get(name) is not None:
            values[field_name] = typed(name, body[name], _job_kind(field_name))
    if "vae_decoder" in values:
        values["vae_decoder"] = vae_decoder_of(values["vae_decoder"])
    if not 1 <= values["num_images"]:
        raise HttpError(400, "'n' must be at least 1")
    check_lora_tags(values["prompt"], values.get("negative"))
    return Job(task="txt2img", **{k: v for k, v in values.items() if v is not None})


def openai_edit_job(fields: dict[str, list], inputs: Inputs):
    """The Job of an OpenAI `/v1/images/edits` form (multipart fields -> their values, str or bytes).

    One image; with `mask`, its fully transparent pixels are the area to repaint (OpenAI's rule; a mask
    without transparency is read as diffcli's: white = repaint) and the job is an inpaint; without a
    mask, an image with transparent pixels is inpainted there, any other image is an img2img. On a model
    that edits by instruction (InstructPix2Pix, FLUX.1 Kontext, FLUX.2 [klein]) the job is an edit, the prompt
    its instruction (with a mask: of that area, where the model's family takes one; `image_cfg` may be given),
    and several `image[]` parts are the image to edit (the first) and its reference images (`-r`, the rest).
    """
    from diffcli.jobs import Job
    from diffcli.run import model_edits

    images = fields.get("image", []) + fields.get("image[]", [])
    if not images or not all(isinstance(image, bytes) for image in images):
        raise HttpError(400, "send the image to edit as a file in 'image'")
    values = {}
    for name, items in fields.items():
        if name in ("image", "image[]"):
            continue
        if len(items) != 1:
            raise HttpError(400, f"'{name}' is given {len(items)} times")
        values[name] = items[0]
    mask = values.pop("mask", None)
    text = {k: v for k, v in values.items() if isinstance(v, str)}
    if len(text) != len(values):
        raise HttpError(400, f"'{next(k for k, v in values.items() if not isinstance(v, str))}' must be a text field")
    body = {k: _number(k, v) for k, v in text.items()}
    strength = body.pop("strength", None)
    image_cfg = body.pop("image_cfg", None)
    job = openai_job(body)
    image_path = inputs.add_bytes(images[0], "image")
    repaint = _repaint_area(mask if mask is not None else images[0], from_image=mask is None)
    extra = {"image": image_path, "strength": strength, "image_cfg": image_cfg}
    if model_edits(job.model):  # an instruction edit (a mask: of that area; more images: its references)
        if isinstance(mask, str):
            raise HttpError(400, "'mask' must be an image file")
        extra.update(task="edit", mask=inputs.add_bytes(repaint, "mask") if repaint is not None else None)
        if len(images) > 1:
            extra["references"] = tuple(inputs.add_bytes(data, f"image[{i}]") for i, data in enumerate(images[1:], 1))
    elif len(images) > 1:
        raise HttpError(
            400, f"send exactly one image file in 'image' ({len(images)} given; reference images are for models "
            "that edit by instruction)"
        )  # fmt: skip
    elif image_cfg is not None:
        raise HttpError(400, "'image_cfg' is for models that edit by instruction (InstructPix2Pix)")
    elif repaint is not None:
        extra.update(task="inpaint", mask=inputs.add_bytes(repaint, "mask"))
    else:
        if isinstance(mask, str):
            raise HttpError(400, "'mask' must be an image file")
        extra["task"] = "img2img"
    return Job(**{**job.to_dict(), **{k: v for k, v in extra.items() if v is not None}})


def _number(name: str, value: str):
    """A form field's text as the JSON value the generations body would carry: a number where the field
    (`n`, or the Job field it names) is one."""
    field_name = {"strength": "strength", "image_cfg": "image_cfg", **_DIFFCLI_EXTRAS}.get(name)
    kind = int if name == "n" else _job_kind(field_name).kind if field_name else str
    if kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            want = "an integer" if kind is int else "a number"
            raise HttpError(400, f"'{name}' must be {want}, not '{value[:40]}'") from None
    return value


# one image decoded at a time by the request threads (up to 16 of them, each image up to 89 M pixels, a few
# bytes a pixel each): the engine's worker, which decodes the rest, runs one job at a time too
_DECODING = threading.Lock()


def _repaint_area(data, from_image: bool) -> bytes | None:
    """A white-is-repaint PNG mask from an OpenAI mask (or, FROM_IMAGE, the image itself): its fully
    transparent pixels. None where the image has no transparent pixel (then nothing is masked)."""
    import io

    from PIL import Image, UnidentifiedImageError

    if isinstance(data, str):
        return None
    check_image(data, "image" if from_image else "mask")  # before it is decoded here
    try:
        with Image.open(io.BytesIO(data)) as img:
            has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
            if from_image and not has_alpha:  # read from the header: nothing to decode
                return None
            with _DECODING:
                img.load()
                if has_alpha:
                    alpha = img.getchannel("A") if img.mode in ("RGBA", "LA") else img.convert("RGBA").getchannel("A")
                    repaint = alpha.point(lambda a: 255 if a == 0 else 0)
                    del alpha
                    if from_image and repaint.getbbox() is None:
                        return None
                else:
                    repaint = img.convert("L")
                out = io.BytesIO()
                repaint.save(out, format="PNG")
                return out.getvalue()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise HttpError(
            400,
            "'mask' is not an image in a supported format"
            if not from_image
            else "'image' is not an image in a supported format",
        ) from None


def models() -> list[dict]:
    from diffcli.models import inventory

    out = []
    for item in inventory.items():
        if item.source in ("bundled", "hub") and item.status in ("complete", "adopted"):
            out.append(
                {
                    "title": item.name,
                    "model_name": item.name,
                    "hash": None,
                    "sha256": None,
                    "filename": item.name,
                    "config": None,
                }
            )  # (a name: no reply shows a server path)
    return out


def samplers() -> list[dict]:
    """A1111's sampler list: each name once, with our entries of that name as its aliases ("Euler":
    euler and flow-euler; the model decides which one runs)."""
    from diffcli.schedulers import SCHEDULERS

    aliases: dict[str, list[str]] = {}
    for name, spec in SCHEDULERS.items():
        aliases.setdefault(spec.a1111, []).append(name)
    return [{"name": a1111, "aliases": names, "options": {}} for a1111, names in aliases.items()]


def image_info(paths: list[Path]) -> tuple[list[str], list[int | None]]:
    """Each written file's `parameters` text and seed, read from its metadata (not its pixels)."""
    from PIL import Image

    infotexts, seeds = [], []
    for path in paths:
        with Image.open(path) as img:
            infotexts.append(img.info.get("parameters", ""))
            try:
                seeds.append(json.loads(img.info.get("diffcli", "{}"))["job"]["seed"])
            except (ValueError, KeyError, TypeError):
                seeds.append(None)
    return infotexts, seeds


def remove_files(paths) -> None:
    """Remove the images at PATHS (written for a request that did not ask to keep them)."""
    for path in paths:
        Path(path).unlink(missing_ok=True)


# -- what a reply may say ------------------------------------------------------------------------------

_COMPONENT = r"[/\\][^\s'\"()<>,;:/\\]+"
# an absolute path: ~/X, or two or more components from the root (C:\X\Y on Windows); not part of a word,
# a URL or a relative path ("org/name", "http://host/x", "../x")
_SERVER_PATH = re.compile(rf"(?<![\w.:/\\~-])(?:~(?:{_COMPONENT})+|(?:[A-Za-z]:)?(?:{_COMPONENT}){{2,}})[/\\]?")
_ENDPOINTS = ("/sdapi/", "/v1/")


def public_message(text, inputs: Inputs | None = None) -> str:
    """TEXT (an error or warning for a reply) naming no path of the server: an uploaded image by the request
    field that carried it (INPUTS), the LoRA folder as such, any other absolute path as <server path>."""
    from diffcli.models.lora import lora_dir

    text = str(text)
    for path, name in sorted((inputs.names if inputs is not None else {}).items(), key=lambda kv: -len(kv[0])):
        text = text.replace(path, name)
    folder = str(lora_dir())
    text = re.sub(
        re.escape(folder) + rf"(?:{_COMPONENT})*",
        lambda m: "the LoRA folder" if m.group() == folder else "<server path>",
        text,
    )
    return _SERVER_PATH.sub(lambda m: m.group() if m.group().startswith(_ENDPOINTS) else "<server path>", text)

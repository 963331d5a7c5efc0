"""What an image records about how it was made, and reading it back (no torch).

PNG: a `parameters` text chunk in AUTOMATIC1111's format (other tools read it) and a `diffcli`
chunk holding the full JSON record. JPEG/WebP: the same two texts in EXIF (UserComment and
ImageDescription). The format is documented in docs/metadata.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffcli import __version__
from diffcli.errors import UsageError

EXIF_IFD = 0x8769
EXIF_USER_COMMENT = 0x9286
EXIF_IMAGE_DESCRIPTION = 0x010E
_UNICODE_PREFIX = b"UNICODE\x00"
_ASCII_PREFIX = b"ASCII\x00\x00\x00"


def build_record(job_dict: dict, model: dict, device: str, dtype: str, extra: dict | None = None) -> dict:
    """The full JSON record of one image."""
    record = {"diffcli": __version__, "job": job_dict, "model": model, "device": device, "dtype": dtype}
    if extra:
        record.update(extra)
    return record


def a1111_parameters(record: dict) -> str:
    """The `parameters` text AUTOMATIC1111 writes, for tools that read it."""
    from diffcli.schedulers import SCHEDULERS
    from diffcli.text import one_line

    job = record["job"]
    loras = (record.get("model") or {}).get("loras") or []
    tags = "".join(f" <lora:{one_line(r['name'])}:{r['weight']:g}>" for r in loras)  # as an A1111 prompt names them
    lines = [one_line(job.get("prompt") or "") + tags]  # a newline in a prompt must not forge a field line
    if job.get("negative"):
        lines.append(f"Negative prompt: {one_line(job['negative'])}")
    sampler = job.get("scheduler") or ""
    fields = {
        "Steps": job.get("steps"),
        "Sampler": SCHEDULERS[sampler].a1111 if sampler in SCHEDULERS else sampler,
        "CFG scale": job.get("cfg"),
        "Seed": job.get("seed"),
        "Size": f"{job.get('width')}x{job.get('height')}",
        "Model hash": (record.get("model") or {}).get("hash"),
        "Model": (record.get("model") or {}).get("name"),
    }
    lora = (record.get("model") or {}).get("lora")
    hashes = [f"{Path(lora['path']).name}: {lora['hash']}"] if lora else []
    hashes += [f"{one_line(r['name'])}: {r['sha256'][:12]}" for r in loras]  # A1111's short hash: 12 digits of sha256
    if hashes:  # A1111 quotes the list: Lora hashes: "name: hash, name2: hash2"
        fields["Lora hashes"] = '"' + ", ".join(hashes) + '"'
    if job.get("shift") not in (None, 1.0):  # the timestep shift, when it moved the steps
        fields["Shift"] = job.get("shift")
    if job.get("base"):  # a transformer file's text encoders, VAE and scheduler came from this model
        fields["Base model"] = one_line(Path(str(job["base"])).name)
    if job.get("quantize") not in (None, "none"):
        fields["Quantization"] = job.get("quantize")
    if job.get("cache") not in (None, "none"):  # step caching (diffcli.cache), e.g. "Cache: deepcache:3"
        fields["Cache"] = job.get("cache")
    if job.get("vae_decoder") not in (None, "full"):  # a tiny decoder, named as A1111 names a VAE: "VAE: taesd"
        from diffcli.vae_decoder import label

        fields["VAE"] = one_line(label(str(job["vae_decoder"])))
    if job.get("task") in ("img2img", "inpaint", "outpaint"):
        fields["Denoising strength"] = job.get("strength")
    if job.get("task") in ("inpaint", "outpaint"):
        fields["Mask blur"] = job.get("mask_blur")
    for i, c in enumerate((record.get("model") or {}).get("controlnets") or []):  # as sd-webui-controlnet writes them
        fields[f"ControlNet {i}"] = (
            f'"Module: {c.get("preprocess") or "none"}, Model: {one_line(str(c.get("name")))}, '
            f"Weight: {c.get('scale'):g}, Guidance Start: {c.get('start'):g}, "
            f"Guidance End: {c.get('end'):g}" + (f", Union Control Type: {c['mode']}" if c.get("mode") else "") + '"'
        )
    if job.get("task") == "outpaint":  # quoted, as A1111 quotes values with commas
        fields["Outpaint extend"] = f'"{job.get("extend")}"'
        fields["Outpaint fill"] = job.get("fill")
    if job.get("task") == "txt2img" and (job.get("hires") is not None or job.get("hires_size") is not None):
        from diffcli.hires import a1111_fields  # the hires fix, as A1111 writes it ("Size" is the first pass's)

        fields.update(a1111_fields(job))
    if job.get("task") == "edit":  # an instruction edit: A1111 names InstructPix2Pix's image guidance so
        fields["Image CFG scale"] = job.get("image_cfg")
        refs = [r for r in record.get("references") or [] if isinstance(r, dict)]
        if refs:  # quoted, as A1111 quotes its hash lists: "name: hash, ..."
            fields["References"] = (
                '"' + ", ".join(f"{one_line(str(r.get('name')))}: {str(r.get('sha256'))[:12]}" for r in refs) + '"'
            )
    fields["Version"] = f"diffcli {record.get('diffcli', __version__)}"
    lines.append(", ".join(f"{k}: {v}" for k, v in fields.items() if v not in (None, "")))
    return "\n".join(lines)


def parameters_fields(text: str) -> dict[str, str]:
    """The `Name: value` fields of an A1111 `parameters` text (its last line), quoted values unquoted:
    "Steps: 15, Cache: deepcache:3, Lora hashes: \"a: 1, b: 2\"" -> {"Steps": "15", "Cache": "deepcache:3",
    "Lora hashes": "a: 1, b: 2"}. A value may hold ':' (only ', ' ends it, outside quotes)."""
    import re

    last = text.strip().splitlines()[-1] if text.strip() else ""
    fields = re.finditer(r'([^:,"]+): (?:"([^"]*)"|([^,]*))(?:,|$)', last)
    return {m.group(1).strip(): (m.group(2) if m.group(2) is not None else m.group(3)).strip() for m in fields}


def pil_save_kwargs(fmt: str, record: dict) -> dict:
    """Keyword arguments for PIL's Image.save that embed RECORD in format FMT."""
    from PIL import Image, PngImagePlugin

    params = a1111_parameters(record)
    blob = json.dumps(record, ensure_ascii=True, sort_keys=True)
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", params)
        info.add_text("diffcli", blob)
        return {"pnginfo": info}
    exif = Image.Exif()
    exif[EXIF_IMAGE_DESCRIPTION] = blob
    exif.get_ifd(EXIF_IFD)[EXIF_USER_COMMENT] = _UNICODE_PREFIX + params.encode("utf-16-be")
    return {"exif": exif.tobytes()}


def _decode_user_comment(raw) -> str:
    if isinstance(raw, str):
        return raw
    if raw.startswith(_UNICODE_PREFIX):
        body = raw[len(_UNICODE_PREFIX) :]
        return body.decode("utf-16-be", errors="replace")
    if raw.startswith(_ASCII_PREFIX):
        return raw[len(_ASCII_PREFIX) :].decode("ascii", errors="replace")
    return raw.decode("utf-8", errors="replace")


def read(path: str | Path) -> tuple[str | None, dict | None]:
    """(A1111 parameters text, diffcli record) stored in an image; either may be None."""
    from diffcli.images import open_image

    with open_image(path) as img:
        info = dict(img.info)
        try:
            exif = img.getexif()
        except Exception:  # noqa: BLE001 - a damaged EXIF block: no record there
            exif = None
    params = info.get("parameters")
    blob = info.get("diffcli")
    if exif:
        try:
            blob = blob or exif.get(EXIF_IMAGE_DESCRIPTION)
            comment = exif.get_ifd(EXIF_IFD).get(EXIF_USER_COMMENT)
            if comment and not params:
                params = _decode_user_comment(comment)
        except Exception:  # noqa: BLE001 - as above
            pass
    record = None
    if blob:
        try:
            record = json.loads(blob)
        except (ValueError, RecursionError):
            record = None
    if not isinstance(record, dict):  # damaged or hand-made: no usable record
        record = None
    if params is not None and not isinstance(params, str):
        params = None
    return params, record


def without_paths(record: dict, lora_folder: Path | None = None) -> dict:
    """RECORD naming no file of this machine, for an image made for a request that names no file (the HTTP
    API, RunOptions.names_only): its input image and mask are left out (null; they were the request's, and
    are gone), each LoRA is named by its place in the LoRA folder (LORA_FOLDER; `--from` finds it there
    again, by name or sha256), and a model given as a path (the server's own default) by its folder name."""
    import os

    from diffcli.models.lora import join_spec, lora_dir, split_spec

    folder = Path(lora_folder or lora_dir())

    def relative(path: str) -> str:
        for base in (folder, folder.resolve()):
            try:
                return Path(path).relative_to(base).as_posix()
            except ValueError:
                pass
        return Path(path).name

    job = dict(record.get("job") or {})
    job.update({key: None for key in ("image", "mask", "references") if job.get(key) is not None})
    if job.get("lora"):
        job["lora"] = [join_spec(relative(p), 1.0 if w is None else w) for p, w in map(split_spec, job["lora"])]
    if isinstance(job.get("model"), str) and os.path.isabs(job["model"]):
        job["model"] = Path(job["model"]).name
    out = {**record, "job": job}
    if record.get("references"):
        out["references"] = [{**r, "path": None} for r in record["references"] if isinstance(r, dict)]
    if isinstance(record.get("model"), dict):
        model = dict(record["model"])
        if model.get("loras"):
            model["loras"] = [{**r, "path": relative(r["path"])} for r in model["loras"]]
        if isinstance(model.get("name"), str) and os.path.isabs(model["name"]):
            model["name"] = Path(model["name"]).name
        out["model"] = model
    return out


def job_from_image(path: str | Path):
    """The Job recorded in an image made by diffcli (for `--from`), its types checked."""
    from diffcli.jobs import Job
    from diffcli.text import shown

    _, record = read(path)
    if not record or "job" not in record:
        raise UsageError(f"{path}: no diffcli record in this image (was it made by diffcli?)")
    job = Job.from_dict(record["job"], source=f"{shown(path)}: recorded job")
    if job.task == "outpaint" and job.inpaint_model is None:
        from dataclasses import replace

        # recorded before outpaint could switch to the family's inpainting model: the recorded model
        # painted it, so a replay keeps it even where that inpainting model is now in the cache
        job = replace(job, inpaint_model="off")
    if job.references:  # each recorded reference image found again here: at its path, else by its hash
        from dataclasses import replace

        from diffcli.references import relocate

        job = replace(job, references=relocate(job.references, record, shown(path), Path(path).resolve().parent))
    if job.lora:  # each recorded LoRA found again here: at its path, else by name or hash in the LoRA folder
        from dataclasses import replace

        from diffcli.models.lora import relocate

        job = replace(job, lora=relocate(job.lora, record, source=shown(path)))
    return job


def recorded_prompt(path) -> str | None:
    """The prompt recorded in an image made by diffcli (or A1111), if any."""
    try:
        params, record = read(path)
    except UsageError:  # metadata is optional; a bad image is reported by whoever reads its pixels
        return None
    job = record.get("job") if record else None
    if isinstance(job, dict) and isinstance(job.get("prompt"), str) and job["prompt"]:
        return job["prompt"]
    if params:
        first = params.splitlines()[0] if params.strip() else ""
        if first and not first.startswith(("Steps:", "Negative prompt:")):
            return first
    return None

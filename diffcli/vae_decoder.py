"""`--vae-decoder`: decode the latents with a tiny autoencoder (TAESD class) instead of the model's VAE.

TAESD (madebyollin, https://github.com/madebyollin/taesd) distils a Stable Diffusion VAE into a
small decoder of about 1 M parameters (diffusers' AutoencoderTiny); its pictures are a little softer
and it decodes many times faster (bench/vae_decode.py). One exists for each family diffcli runs:
taesd (SD 1.x/2.x), taesdxl (SDXL), taesd3 (SD 3.x) and taef1 (FLUX.1).

Values: `full` (the default: the model's own VAE), `tiny` (the family's TAESD, found like any hub
model: in the huggingface_hub cache, pulled on use as `--model` is unless offline), or a hub repo id
or local folder of an AutoencoderTiny. The settled job records `full` or the decoder it used (repo id
or absolute path), so `--from` replays it; a decoder named only inside an image is never fetched.

The tiny decoder replaces the VAE's `decode` for one pipeline call only (the VAE is shared by every
task pipeline of a loaded model, by batch jobs and by `diffcli serve`); the encoder (img2img,
inpaint) stays the model's own. The pipeline hands `decode` the latents scaled for the full VAE
(divided by its scaling_factor, its shift_factor added); they are scaled again for the tiny one, as
the pipeline would scale them for it, so a decoder whose config has its own factors (taesd3, taef1)
gets what it expects.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from diffcli import loading
from diffcli.errors import UsageError

FULL, TINY = "full", "tiny"
DEFAULT = FULL
_LOADED: dict[tuple, object] = {}  # (settled spec, device, dtype) -> AutoencoderTiny, once per process


def check_name(spec: str) -> None:
    """A usage error for a value that cannot be a decoder (before any model is resolved)."""
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError("--vae-decoder is empty; use full, tiny, a hub repo id or a folder")


def settle(job, ref, layout, *, offline: bool = False, progress="quiet"):
    """JOB with its decoder found: `full`, or the tiny decoder's repo id or absolute folder path; the
    decoder's config checked against the model's VAE (no weights read)."""
    from dataclasses import replace

    spec = job.vae_decoder
    if spec in (None, FULL):
        return replace(job, vae_decoder=FULL) if spec is None else job
    check_name(spec)
    name = name_of(spec, ref, layout)
    if name is None:
        from diffcli import families

        raise UsageError(
            f"--vae-decoder tiny: no tiny decoder is known for {ref.name} (family "
            f"{families.of(ref, layout) or 'unknown'}); give an AutoencoderTiny's folder or hub repo id"
        )
    path = find(name, offline=offline, progress=progress)
    check_fits(path, name, ref, layout)
    return replace(job, vae_decoder=str(path) if Path(name).expanduser().is_dir() else name)


def name_of(spec: str, ref, layout) -> str | None:
    """The decoder SPEC names for REF's model: `tiny` is its family's TAESD (None where there is none)."""
    if spec != TINY:
        return spec
    from diffcli import families

    family = families.get(families.of(ref, layout))
    return family.tiny_decoder if family is not None else None


def is_family_decoder(name: str | None) -> bool:
    """Whether NAME is some family's tiny decoder (a recorded `tiny`, as opposed to one the user named)."""
    from diffcli import families

    return name is not None and any(f.tiny_decoder == name for f in families.families().values())


def find(name: str, *, offline: bool = False, progress="quiet") -> Path:
    """The local folder of decoder NAME (a folder, or a hub repo id in the huggingface_hub cache, pulled
    when missing unless offline)."""
    from diffcli.text import shown

    given = Path(name).expanduser()
    if given.is_dir():
        if not is_tiny_dir(given):
            raise UsageError(
                f"--vae-decoder {shown(name)}: not an AutoencoderTiny folder (its config.json names "
                f"another class, or there is none)"
            )
        return given.resolve()
    if name.startswith((".", "/", "~")) or "/" not in name:
        raise UsageError(
            f"--vae-decoder {shown(name)}: no such folder; use full, tiny, a hub repo id (org/name) "
            f"or an AutoencoderTiny folder"
        )
    from diffcli.models.resolve import local_repo

    path = local_repo(
        name,
        offline=offline,
        progress=progress,
        not_here=f"--vae-decoder: {name} is not downloaded (and nothing is fetched here); run "
        f"`diffcli models pull {name}` while online",
    )
    if not is_tiny_dir(path):
        raise UsageError(f"--vae-decoder {shown(name)}: not an AutoencoderTiny (its config.json names another class)")
    return path


def _config(path: Path) -> dict:
    try:
        data = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_tiny_dir(path: Path) -> bool:
    return _config(path).get("_class_name") == "AutoencoderTiny"


def scale_factor(config: dict) -> int:
    """Pixels per latent of an AutoencoderTiny: its decoder upsamples between blocks."""
    blocks = config.get("num_decoder_blocks") or (3, 3, 3, 1)
    return int(config.get("upsampling_scaling_factor") or 2) ** (len(blocks) - 1)


def check_fits(path: Path, name: str, ref, layout) -> None:
    """A usage error when the decoder cannot decode the model's latents (channels, scale factor)."""
    from diffcli.text import shown

    own = _config(path)
    vae = _config(Path(ref.path) / "vae") if getattr(ref, "kind", "diffusers") == "diffusers" else {}
    channels = (vae.get("latent_channels"), own.get("latent_channels", 4))
    if vae and channels[0] != channels[1]:
        raise UsageError(
            f"--vae-decoder {shown(name)}: it decodes {channels[1]}-channel latents; {ref.name} makes "
            f"{channels[0]}-channel ones"
        )
    if layout is not None and scale_factor(own) != layout.vae_scale_factor:
        raise UsageError(
            f"--vae-decoder {shown(name)}: it decodes at {scale_factor(own)} pixels per latent; "
            f"{ref.name}'s VAE at {layout.vae_scale_factor}"
        )


def label(spec: str | None) -> str | None:
    """What an A1111 `VAE` field calls a settled decoder (its folder or repo name); None for the full VAE."""
    if spec in (None, FULL):
        return None
    return Path(spec.partition("@")[0]).name


def load(spec: str, choice):
    """The AutoencoderTiny of a settled decoder SPEC on CHOICE's device and dtype, found and loaded once
    per process (later jobs of a batch or server look nothing up again)."""
    key = (spec, choice.device, choice.dtype)
    if key not in _LOADED:
        from diffusers import AutoencoderTiny

        from diffcli.device import torch_dtype

        path = Path(spec) if Path(spec).is_dir() else find(spec, offline=True)
        model = loading.from_pretrained(
            AutoencoderTiny,
            str(path),
            torch_dtype=torch_dtype(choice.dtype),
            local_files_only=True,
            use_safetensors=True,
        )
        _LOADED[key] = model.to(choice.device).eval()
    return _LOADED[key]


@contextmanager
def active(pipe, spec: str | None, choice):
    """PIPE's VAE decodes with SPEC's tiny decoder for the calls made inside; its own again after."""
    vae = getattr(pipe, "vae", None)
    if spec in (None, FULL) or vae is None:
        yield
        return
    tiny = load(spec, choice)
    full = vae.config
    own = tiny.config

    def decode(z, return_dict: bool = True, generator=None, **_):
        latents = (z - (full.get("shift_factor") or 0.0)) * full.scaling_factor  # the denoiser's latents
        scaled = latents / own.scaling_factor + (own.get("shift_factor") or 0.0)
        return tiny.decode(scaled.to(tiny.dtype), return_dict=return_dict)

    had = vae.__dict__.get("decode")
    vae.decode = decode
    try:
        yield
    finally:
        if had is None:
            del vae.decode
        else:
            vae.decode = had

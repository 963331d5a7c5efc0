"""Facts read from a diffusers model directory's JSON files, without loading any weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from diffcli.errors import UsageError

# Recommended settings by family, used when neither the user nor the model says otherwise.
FAMILY_DEFAULTS: dict[str, dict] = {
    "sd1": {"steps": 25, "cfg": 7.0, "scheduler": "dpm++2m-karras"},
    "sd2": {"steps": 25, "cfg": 7.0, "scheduler": "dpm++2m-karras"},
    "sdxl": {"steps": 25, "cfg": 6.0, "scheduler": "dpm++2m-karras"},
    "lcm": {"steps": 4, "cfg": 1.0, "scheduler": "lcm"},
    "upscaler": {"steps": 20, "cfg": 0.0, "scheduler": "euler"},
    # Flow-matching families. SD 3.x: --cfg is classifier-free guidance. FLUX.1: --cfg is the value
    # given to the transformer's guidance embedding (dev, fill); schnell has none and ignores it.
    "sd3": {"steps": 28, "cfg": 7.0, "scheduler": "flow-euler"},
    "flux": {"steps": 28, "cfg": 3.5, "scheduler": "flow-euler"},
    "flux-schnell": {"steps": 4, "cfg": 0.0, "scheduler": "flow-euler"},
    "flux-fill": {"steps": 50, "cfg": 30.0, "scheduler": "flow-euler"},
}
FLOW_FAMILIES = ("sd3", "flux")  # sampled with flow-matching schedulers
# Latent size when the denoiser's config has none (FLUX: the pipeline's default_sample_size).
DEFAULT_SAMPLE_SIZE = {"flux": 128}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None


@dataclass(frozen=True)
class Layout:
    """What a diffusers-layout model is, read from model_index.json and component configs."""

    path: Path
    pipeline_class: str
    family: str  # sd1 | sd2 | sdxl | sd3 | flux | bundled | upscaler | unknown
    unet_in_channels: int
    sample_size: int  # UNet latent size
    vae_scale_factor: int
    scheduler_class: str
    defaults: dict  # the model's own recommended settings (diffcli.json), may be empty
    patch_size: int = 1  # latent pixels per token side of a transformer denoiser (SD3: its patch_size; FLUX: 2)
    guidance_embeds: bool = False  # FLUX: the transformer takes a guidance value (dev, fill; not schnell)

    @property
    def native_size(self) -> int:
        return self.sample_size * self.vae_scale_factor

    @property
    def is_inpaint(self) -> bool:
        return self.unet_in_channels == 9 or "Inpaint" in self.pipeline_class or "Fill" in self.pipeline_class

    @property
    def is_flow(self) -> bool:
        """Sampled with a flow-matching scheduler (SD 3.x, FLUX.1)."""
        return self.family in FLOW_FAMILIES

    @property
    def settings_family(self) -> str:
        """The FAMILY_DEFAULTS entry for this model: its family, or a variant of it with other settings."""
        if self.is_lcm:
            return "lcm"
        if self.family == "flux" and "Fill" in self.pipeline_class:
            return "flux-fill"
        if self.family == "flux" and not self.guidance_embeds:
            return "flux-schnell"
        return self.family

    @property
    def is_upscaler(self) -> bool:
        return "Upscale" in self.pipeline_class

    @property
    def is_lcm(self) -> bool:
        return self.scheduler_class == "LCMScheduler"

    def recommended(self) -> dict:
        """Family defaults overlaid with the model's own diffcli.json."""
        base = dict(FAMILY_DEFAULTS.get(self.settings_family, FAMILY_DEFAULTS["sd1"]))
        base.update({"width": self.native_size, "height": self.native_size})
        base.update({k: v for k, v in self.defaults.items() if v is not None})
        return base


def read_layout(path: Path) -> Layout:
    path = Path(path)
    index = _read_json(path / "model_index.json")
    if not index:
        raise UsageError(f"{path}: not a diffusers model directory (no model_index.json)")
    pipeline_class = str(index.get("_class_name", ""))
    unet = _read_json(path / "unet" / "config.json")
    transformer = {} if unet else _read_json(path / "transformer" / "config.json")
    vae = _read_json(path / "vae" / "config.json")
    scheduler = _read_json(path / "scheduler" / "scheduler_config.json")
    own = _read_json(path / "diffcli.json")
    vae_blocks = vae.get("block_out_channels") or [0, 0, 0, 0]
    vae_scale = 2 ** (len(vae_blocks) - 1)
    if own.get("family"):
        family = own["family"]
    elif pipeline_class.startswith("StableDiffusion3") or "text_encoder_3" in index:
        family = "sd3"
    elif pipeline_class.startswith("Flux") and not pipeline_class.startswith("Flux2"):
        family = "flux"
    elif "Upscale" in pipeline_class:
        family = "upscaler"
    elif "XL" in pipeline_class or "text_encoder_2" in index:
        family = "sdxl"
    elif unet.get("cross_attention_dim") == 1024:
        family = "sd2"
    elif unet:
        family = "sd1"
    else:
        family = "unknown"
    denoiser = unet or transformer
    sample_size = denoiser.get("sample_size") or DEFAULT_SAMPLE_SIZE.get(family, 64)
    if isinstance(sample_size, (list, tuple)):
        sample_size = sample_size[0]
    return Layout(
        path=path,
        pipeline_class=pipeline_class,
        family=family,
        unet_in_channels=int(denoiser.get("in_channels", 4)),
        sample_size=int(sample_size),
        vae_scale_factor=vae_scale,
        scheduler_class=str(scheduler.get("_class_name", "")),
        defaults={k: v for k, v in own.items() if k != "family"},
        patch_size=2 if family == "flux" else int(transformer.get("patch_size") or 1),  # FLUX packs 2x2 latents
        guidance_embeds=bool(transformer.get("guidance_embeds")),
    )

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
}


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
    family: str  # sd1 | sd2 | sdxl | bundled | upscaler | unknown
    unet_in_channels: int
    sample_size: int  # UNet latent size
    vae_scale_factor: int
    scheduler_class: str
    defaults: dict  # the model's own recommended settings (diffcli.json), may be empty

    @property
    def native_size(self) -> int:
        return self.sample_size * self.vae_scale_factor

    @property
    def is_inpaint(self) -> bool:
        return self.unet_in_channels == 9 or "Inpaint" in self.pipeline_class

    @property
    def is_upscaler(self) -> bool:
        return "Upscale" in self.pipeline_class

    @property
    def is_lcm(self) -> bool:
        return self.scheduler_class == "LCMScheduler"

    def recommended(self) -> dict:
        """Family defaults overlaid with the model's own diffcli.json."""
        base = dict(FAMILY_DEFAULTS.get("lcm" if self.is_lcm else self.family, FAMILY_DEFAULTS["sd1"]))
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
    vae = _read_json(path / "vae" / "config.json")
    scheduler = _read_json(path / "scheduler" / "scheduler_config.json")
    own = _read_json(path / "diffcli.json")
    vae_blocks = vae.get("block_out_channels") or [0, 0, 0, 0]
    vae_scale = 2 ** (len(vae_blocks) - 1)
    sample_size = unet.get("sample_size") or 64
    if isinstance(sample_size, (list, tuple)):
        sample_size = sample_size[0]
    if own.get("family"):
        family = own["family"]
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
    return Layout(
        path=path,
        pipeline_class=pipeline_class,
        family=family,
        unet_in_channels=int(unet.get("in_channels", 4)),
        sample_size=int(sample_size),
        vae_scale_factor=vae_scale,
        scheduler_class=str(scheduler.get("_class_name", "")),
        defaults={k: v for k, v in own.items() if k != "family"},
    )

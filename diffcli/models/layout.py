"""Facts read from a diffusers model directory's JSON files, without loading any weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from diffcli import families
from diffcli.errors import UsageError

DEFAULT_SAMPLE_SIZE = 64  # latent size when neither the denoiser's config nor its family gives one


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
    family: str  # a family of diffcli.families (sd1, sdxl, flux, bundled, upscaler, ...) or "unknown"
    unet_in_channels: int
    sample_size: int  # UNet latent size
    vae_scale_factor: int
    scheduler_class: str
    defaults: dict  # the model's own recommended settings (diffcli.json), may be empty
    patch_size: int = 1  # latent pixels per token side of a transformer denoiser (SD3: its patch_size; FLUX: 2)
    guidance_embeds: bool = False  # FLUX: the transformer takes a guidance value (dev, fill; not schnell)
    settings_family: str = ""  # whose settings it takes: its family, or a variant of it (lcm, flux-schnell, ...)
    own_steps: int | None = None  # the count of the sigmas its pipeline config ships (diffcli.timesteps), if any

    @property
    def native_size(self) -> int:
        return self.sample_size * self.vae_scale_factor

    @property
    def is_inpaint(self) -> bool:
        return self.unet_in_channels == 9 or "Inpaint" in self.pipeline_class or "Fill" in self.pipeline_class

    @property
    def is_flow(self) -> bool:
        """Sampled with a flow-matching scheduler (SD 3.x, FLUX.1)."""
        family = families.get(self.family)
        return family is not None and family.flow

    @property
    def is_upscaler(self) -> bool:
        return "Upscale" in self.pipeline_class

    @property
    def is_lcm(self) -> bool:
        return self.scheduler_class == "LCMScheduler"

    def layers(self) -> list[tuple[str, dict]]:
        """(source, values) of what the folder's configs say, lowest first: its family's defaults, its native
        size, and, where its pipeline samples on sigmas it ships, as many steps as there are (settings.py puts
        an alias's settings and then diffcli.json, `own_settings`, above these)."""
        layers = [
            (f"family {self.settings_family}", families.defaults(self.settings_family)),
            ("native size", {"width": self.native_size, "height": self.native_size}),
        ]
        if self.own_steps:
            layers.append(("its sample_sigmas", {"steps": self.own_steps}))
        return layers

    def own_settings(self) -> dict:
        """The settings its diffcli.json recommends."""
        return {k: v for k, v in self.defaults.items() if v is not None}

    def recommended(self) -> dict:
        """The layers of its configs overlaid with the model's own diffcli.json."""
        base: dict = {}
        for _, values in self.layers():
            base.update(values)
        base.update(self.own_settings())
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
    # a level per block (AutoencoderKL's block_out_channels; the Wan-style VAEs of Qwen-Image: dim_mult), each but
    # the first halving the size: 8x for most, 16x for Qwen-Image 2.1's
    vae_blocks = vae.get("block_out_channels") or vae.get("dim_mult") or [0, 0, 0, 0]
    vae_scale = 2 ** (len(vae_blocks) - 1)
    configs = families.Configs(index, unet, transformer, scheduler)
    family = own.get("family") or families.detect(configs)
    spec = families.get(family)
    denoiser = unet or transformer
    sample_size = denoiser.get("sample_size") or (spec and spec.sample_size) or DEFAULT_SAMPLE_SIZE
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
        patch_size=(spec and spec.patch_size) or int(transformer.get("patch_size") or 1),
        guidance_embeds=bool(transformer.get("guidance_embeds")),
        settings_family=families.variant(family, configs),
        own_steps=len(index["sample_sigmas"]) if isinstance(index.get("sample_sigmas"), list) else None,
    )

"""`diffcli upscale`: diffusion super-resolution in bounded memory (see docs/upscale.md).

No torch at import time; `core.upscale` imports it only when a model runs.
"""

from diffcli.upscale.core import DEFAULT_MAX_PIXELS, METHODS, Options, Request, prepare, upscale

__all__ = ["DEFAULT_MAX_PIXELS", "METHODS", "Options", "Request", "prepare", "upscale"]

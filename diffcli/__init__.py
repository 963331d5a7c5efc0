"""diffcli: generate and edit images with diffusion models from the command line."""

from diffcli import lazy_diffusers as _lazy_diffusers

__version__ = "0.1.0"

_lazy_diffusers.install()  # import only the diffusers models a job uses (see that module)

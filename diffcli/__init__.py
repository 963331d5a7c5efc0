"""diffcli: generate and edit images with diffusion models from the command line."""

__version__ = "0.1.0"

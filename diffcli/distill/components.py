"""Loading one model component (a UNet, a VAE, a text encoder) in float32 from local files, quietly.

Shared by the student export, the trainer and the report, so none of them imports another for it.
"""

from __future__ import annotations

from diffcli import loading


def from_pretrained(cls, path, dtype=None, **kw):
    """cls.from_pretrained in float32 (or DTYPE) from local files, without the libraries' deprecation chatter."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return loading.from_pretrained(cls, str(path), torch_dtype=dtype or torch.float32, local_files_only=True, **kw)

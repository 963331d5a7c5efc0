"""The one door through which diffcli loads weights: every load leaves torch's process-wide state as it found it.

diffusers' `ModelMixin.from_pretrained(torch_dtype=...)` sets torch's default dtype while it builds a model
and does not put it back when the model's constructor raises (transformers has the same open issue,
huggingface/transformers#28461). After one failed bfloat16 load, every tensor a later job creates without
an explicit dtype is bfloat16: a float32 job fails ("mat1 and mat2 must have the same dtype") or draws
other pixels. Long-lived processes (`serve`, `batch`) load one model after another, so every load in
diffcli — pipelines, ControlNets, LoRA adapters, tiny decoders, single files, training recipes — calls
one of the functions below (tests/test_architecture.py checks that no other module calls the libraries'
loaders directly), and `torch_state_kept` restores the default dtype and device whether the load succeeds
or raises.
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def torch_state_kept():
    """Restore torch's default dtype and default device on the way out, however the block ends."""
    import torch

    dtype, device = torch.get_default_dtype(), torch.get_default_device()
    try:
        yield
    finally:
        if torch.get_default_dtype() != dtype:
            torch.set_default_dtype(dtype)
        if torch.get_default_device() != device:
            torch.set_default_device(device)


def from_pretrained(cls, *args, **kwargs):
    """`cls.from_pretrained(*args, **kwargs)` (a diffusers/transformers model, pipeline or tokenizer)."""
    with torch_state_kept():
        return cls.from_pretrained(*args, **kwargs)


def from_single_file(cls, *args, **kwargs):
    """`cls.from_single_file(*args, **kwargs)` (diffusers' single-file loaders)."""
    with torch_state_kept():
        return cls.from_single_file(*args, **kwargs)


def load_lora_weights(pipe, *args, **kwargs) -> None:
    """`pipe.load_lora_weights(*args, **kwargs)`: a LoRA adapter onto a loaded pipeline."""
    with torch_state_kept():
        pipe.load_lora_weights(*args, **kwargs)

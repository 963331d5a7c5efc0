"""Which loaded models a server keeps: the N most recently used (--keep N), within a memory budget
(--max-memory: the weights of the models kept, least recently used dropped first, the one just used
always kept).

diffcli.pipelines caches every pipeline a process loads, for the life of the process; a server lives
long, so it forgets the least recently used ones. It uses pipelines' cache through
its public key_of, loaded_keys and release.
"""

from __future__ import annotations

import gc
import sys
from collections import OrderedDict


class Recent:
    """Least-recently-used order of the pipelines a server has used."""

    def __init__(self, keep: int, max_bytes: int | None = None) -> None:
        self.keep = keep
        self.max_bytes = max_bytes
        self.order: OrderedDict = OrderedDict()

    def used(self, prepared, load_options) -> None:
        """Record that PREPARED's model (on its device and dtype, with LOAD_OPTIONS) ran, then forget
        models beyond the KEEP most recently used."""
        pipelines = sys.modules.get("diffcli.pipelines")
        if pipelines is None or prepared.ref is None:  # (no model: upscale --method lanczos)
            return
        from diffcli.run import device_choice
        from diffcli.run import load_options as options_of

        key = pipelines.key_of(prepared.ref, device_choice(prepared), options_of(prepared, load_options))
        self.order.pop(key, None)
        self.order[key] = None
        self.trim()

    def trim(self) -> list[tuple]:
        """Forget loaded pipelines beyond the KEEP most recently used; returns the keys forgotten."""
        pipelines = sys.modules.get("diffcli.pipelines")
        if pipelines is None:
            return []
        loaded = pipelines.loaded_keys()
        for key in list(self.order):
            if key not in loaded:  # released by someone else
                del self.order[key]
        for key in loaded:  # loaded but never recorded: oldest
            if key not in self.order:
                self.order[key] = None
                self.order.move_to_end(key, last=False)
        dropped = []
        while len(self.order) > self.keep:
            key, _ = self.order.popitem(last=False)
            pipelines.release(key)
            dropped.append(key)
        if self.max_bytes is not None:
            sizes = {key: pipelines.loaded_bytes(key) for key in self.order}
            while len(self.order) > 1 and sum(sizes.values()) > self.max_bytes:
                key, _ = self.order.popitem(last=False)
                del sizes[key]
                pipelines.release(key)
                dropped.append(key)
        if dropped:
            gc.collect()
            _empty_device_caches()
        return dropped

    def loaded(self) -> list[dict]:
        """The models held now, most recently used last: path, device, dtype, bytes of weights."""
        pipelines = sys.modules.get("diffcli.pipelines")
        return [
            {
                "model": key[0],
                "device": key[3],
                "dtype": key[4],
                "bytes": pipelines.loaded_bytes(key) if pipelines else None,
            }
            for key in list(self.order)
        ]


def _empty_device_caches() -> None:
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        mps.empty_cache()

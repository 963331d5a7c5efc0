"""Where finished images go: an atomic save with metadata, a progress event, a line on stdout.

Every generation path (txt2img/img2img/inpaint, upscale, batch) writes through one Sink, so files,
records and result lines look the same whichever command or front door made them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sink:
    fmt: str  # Pillow format name, e.g. "PNG"
    overwrite: bool
    as_json: bool  # stdout: one JSON object per image, else its path
    reporter: object
    extra: dict | None = None  # added to every image's record (e.g. a batch job's key)
    results: object = None  # callable taking each result line; None: stdout (a server sends it to its client)
    public: bool = False  # records name no file of this machine (RunOptions.names_only; metadata.without_paths)

    def write(self, image, path: Path, record: dict, result: dict, index: int) -> None:
        """Save IMAGE at PATH with RECORD embedded, report it as image INDEX (1-based), print RESULT."""
        from diffcli.metadata import pil_save_kwargs
        from diffcli.output import save_atomic

        if self.extra:
            record = {**record, **self.extra}
        if self.public:
            from diffcli.metadata import without_paths

            record = without_paths(record)
        save_atomic(image, path, self.fmt, pil_save_kwargs(self.fmt.lower(), record), self.overwrite)
        self.reporter.saved(str(path), result.get("seed"), index)
        line = json.dumps({"path": str(path), **result}) if self.as_json else str(path)
        if self.results is not None:
            self.results(line)
            return
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def model_record(ref) -> dict:
    """What an image records about its model: name, source, revision, fingerprint (and its LoRA's)."""
    from diffcli.models.fingerprint import fingerprint

    record = {"name": ref.name, "source": ref.source, "revision": ref.revision, "hash": fingerprint(str(ref.path))}
    if getattr(ref, "lora", None) is not None:
        record["lora"] = {"path": str(ref.lora), "hash": fingerprint(str(ref.lora))}
    return record

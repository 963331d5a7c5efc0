"""Ship a distilled student of the bundled model inside the package, as `tiny-lcm`.

    diffcli distill --out ./tiny-lcm                # the default run, with its report
    python -m diffcli.training.ship_student ./tiny-lcm

Copies the student directory (fp16 weights, its scheduler, `diffcli.json`, `report.md`/`.json`)
to `diffcli/bundled/tiny-lcm`, swapped in whole. The record of the run keeps everything but the
machine's absolute teacher path, which becomes the package-relative one (and the paths diffusers
writes into the component configs are dropped); files are made readable
by everyone (an installed package is read by other users).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from diffcli.bundled import MODEL_NAME, model_dir
from diffcli.output import swap_in_dir
from diffcli.training.export import load_in_float32_by_default

NAME = "tiny-lcm"
SHIPPED = (
    "model_index.json",
    "diffcli.json",
    "report.json",
    "report.md",
    "scheduler",
    "text_encoder",
    "tokenizer",
    "unet",
    "vae",
)


def ship(student: Path, dest: Path | None = None) -> Path:
    student, dest = Path(student), Path(dest or model_dir(NAME))
    own = json.loads((student / "diffcli.json").read_text())
    record = own.get("distilled_from") or {}
    if record.get("teacher") != MODEL_NAME or not record.get("bundled_teacher"):
        raise SystemExit(f"{student} is not a student of the bundled model")
    missing = [name for name in SHIPPED if not (student / name).exists()]
    if missing:
        raise SystemExit(f"{student} lacks {', '.join(missing)} (run its report first: diffcli distill --report DIR)")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in SHIPPED:
        src = student / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp / name)
    record["teacher_path"] = f"diffcli/bundled/{MODEL_NAME}"
    for config in tmp.glob("*/config.json"):  # diffusers records the machine's path it loaded from
        data = json.loads(config.read_text())
        if data.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(data, indent=2) + "\n")
    load_in_float32_by_default(tmp)  # plain diffusers loads it with default arguments
    (tmp / "diffcli.json").write_text(json.dumps(own, indent=2) + "\n")
    for f in tmp.rglob("*"):
        f.chmod(0o755 if f.is_dir() else 0o644)
    swap_in_dir(tmp, dest)
    return dest


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("student", help="a student directory written by `diffcli distill --teacher tiny`")
    ap.add_argument("--dest", default=None, help="where to write it (default: diffcli/bundled/tiny-lcm)")
    args = ap.parse_args(argv)
    print(ship(Path(args.student), Path(args.dest) if args.dest else None))


if __name__ == "__main__":
    main()

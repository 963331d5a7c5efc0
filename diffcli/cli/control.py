"""`diffcli control preprocess`: write the control map a preprocessor makes, to inspect or edit it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from diffcli.cli import options as o

app = typer.Typer(
    help="ControlNet helpers (generation takes --control on txt2img, img2img and inpaint).", no_args_is_help=True
)

Kind = Annotated[
    str,
    typer.Option(
        "--kind",
        help=(
            "canny (edges; no model), seg (the bundled model's scene segmenter: the object's silhouette) or none "
            "(a copy)."
        ),
        metavar="canny|seg|none",
    ),
]
OutFile = Annotated[
    Optional[Path],
    typer.Option(
        "--out",
        "-o",
        help="File to write (png, jpg or webp; default: IMAGE's name with -KIND.png, in the current folder).",
        show_default=False,
    ),
]


@app.command("preprocess")
def preprocess(
    image: o.InputImage,
    kind: Kind = "canny",
    out: OutFile = None,
    overwrite: o.Overwrite = False,
    quiet: o.Quiet = False,
    debug: o.Debug = False,
) -> None:
    """Make the control map of IMAGE (the one `--control-preprocess KIND` would use) and write it."""
    from diffcli.control import PREPROCESSORS
    from diffcli.control import preprocess as make_map
    from diffcli.errors import UsageError
    from diffcli.images import load_rgb
    from diffcli.output import save_atomic

    if kind not in PREPROCESSORS:
        raise UsageError(f"--kind must be one of {', '.join(PREPROCESSORS)} (got '{kind}')")
    path = Path(out) if out is not None else Path(f"{Path(image).stem}-{kind}.png")
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"--out {path}: use a .png, .jpg or .webp file name")
    if path.exists() and not overwrite:
        raise UsageError(f"{path} exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent}: no such folder")
    source = load_rgb(image)
    save_atomic(make_map(source, kind), path, fmt, {}, overwrite)
    typer.echo(str(path))

"""diffcli.lazy_diffusers: diffusers' eager model sub-packages become lazy, reaching the same names."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from diffcli.lazy_diffusers import PACKAGES, public_names

DIFFUSERS = Path(importlib.util.find_spec("diffusers").origin).parent

PROBE = """
import json, sys
import diffcli  # installs the hook
from diffusers import StableDiffusionPipeline, UNet2DConditionModel, AutoencoderKL
seen = {"after_sd": sorted(m for m in sys.modules if m.startswith("diffusers.models.transformers."))}
seen["dc_autoencoder"] = "diffusers.models.autoencoders.autoencoder_dc" in sys.modules
from diffusers.models.transformers import FluxTransformer2DModel
import diffusers.models.transformers as transformers
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel as Direct
from diffusers import ControlNetModel, SD3Transformer2DModel
from diffusers.hooks import apply_first_block_cache
seen["same_class"] = FluxTransformer2DModel is Direct is transformers.FluxTransformer2DModel
seen["lazy"] = type(transformers).__name__
seen["names"] = [ControlNetModel.__name__, SD3Transformer2DModel.__name__, apply_first_block_cache.__name__]
seen["in_dir"] = "WanTransformer3DModel" in dir(transformers)
try:
    transformers.NoSuchModel
except AttributeError as exc:
    seen["missing"] = str(exc)
print(json.dumps(seen))
"""


def test_a_stable_diffusion_import_leaves_the_other_models_unimported_yet_reachable():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # the SD UNet's blocks need only these two of the 76 transformer modules
    assert seen["after_sd"] == [
        "diffusers.models.transformers.dual_transformer_2d",
        "diffusers.models.transformers.transformer_2d",
    ]
    assert seen["dc_autoencoder"] is False
    assert seen["same_class"] is True and seen["lazy"] == "LazyPackage"
    assert seen["names"] == ["ControlNetModel", "SD3Transformer2DModel", "apply_first_block_cache"]
    assert seen["in_dir"] is True
    assert "NoSuchModel" in seen["missing"]


def test_every_lazy_package_of_this_diffusers_is_a_plain_list_of_imports():
    """If a diffusers release adds code to one of these __init__ files, that package is imported the
    ordinary way (public_names gives None); this test says so, so the hook can be brought up to date."""
    for package in PACKAGES:
        names = public_names((DIFFUSERS.joinpath(*package.split(".")) / "__init__.py").read_text(encoding="utf-8"))
        assert names, package


def test_public_names_reads_imports_and_refuses_anything_else():
    source = (
        '"""doc"""\nfrom ...utils import is_torch_available\nif is_torch_available():\n'
        "    from .a import A, B as C\n    from .b import (\n        D,\n        E,\n    )\n"
    )
    assert public_names(source) == {"A": "a", "C": "a", "D": "b", "E": "b"}
    assert public_names(source + "X = 1\n") is None
    assert public_names(source + "def f():\n    pass\n") is None
    assert public_names(source + "from torch import nn\n") is None

"""diffcli.families: every built-in family declared as data, recognised from its tiny fixture, and the only
place that knows a family by name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from diffcli import families
from diffcli.families import OPTIONS, Configs
from diffcli.models.layout import read_layout

PACKAGE = Path(__file__).resolve().parents[2] / "diffcli"
BUILTIN = {
    "sd1",
    "sd2",
    "sdxl",
    "sdxl-refiner",
    "sd3",
    "flux",
    "flux-fill",
    "flux-kontext",
    "flux-schnell",
    "sd1-ip2p",
    "upscaler",
    "bundled",
    "lcm",
}


def test_the_built_in_families_and_their_variants():
    table = families.families()
    assert BUILTIN <= set(table)
    for family in table.values():
        assert family.options <= set(OPTIONS), family.name
        assert family.variant_of in (None, "*") or family.variant_of in table, family.name
        assert family.guidance in ("cfg", "embedded", "none"), family.name
        assert (family.detect is None) or family.variant_of is None, family.name  # variants are matched, not detected
        for alias in family.aliases.values():
            assert families.get(alias.family) is not None or alias.family.endswith("-lcm"), alias
    assert [f.name for f in table.values() if f.variant_of == "flux"] == ["flux-fill", "flux-kontext", "flux-schnell"]
    assert [f.name for f in table.values() if f.variant_of == "sd1"] == ["sd1-ip2p"]  # (edit: tests/cli/test_edit.py)


def test_each_family_is_recognised_from_its_fixture(tiny_sd, tiny_sdxl, tiny_inpaint, tiny_sd3, tiny_flux, tmp_path):
    from diffcli.bundled import model_dir

    from tiny_flow_models import build_flux

    seen = {
        name: (layout.family, layout.settings_family)
        for name, layout in {
            "sd": read_layout(tiny_sd),
            "sdxl": read_layout(tiny_sdxl),
            "inpaint": read_layout(tiny_inpaint),
            "sd3": read_layout(tiny_sd3),
            "flux": read_layout(tiny_flux),
            "schnell": read_layout(build_flux(tmp_path / "schnell", guidance=False)),
            "tiny": read_layout(model_dir("tiny")),
            "tiny-lcm": read_layout(model_dir("tiny-lcm")),
        }.items()
    }
    assert seen == {
        "sd": ("sd1", "sd1"),
        "sdxl": ("sdxl", "sdxl"),
        "inpaint": ("sd1", "sd1"),
        "sd3": ("sd3", "sd3"),
        "flux": ("flux", "flux"),
        "schnell": ("flux", "flux-schnell"),
        "tiny": ("bundled", "bundled"),  # named by its diffcli.json
        "tiny-lcm": ("bundled", "lcm"),  # LCM: a variant of any family
    }


def test_detection_follows_the_configs_only():
    assert families.detect(Configs({"_class_name": "StableDiffusionUpscalePipeline"}, unet={"in_channels": 7})) == (
        "upscaler"
    )
    assert families.detect(Configs({"_class_name": "X"}, unet={"cross_attention_dim": 1024})) == "sd2"
    assert families.detect(Configs({"_class_name": "Flux2Pipeline"}, transformer={"in_channels": 4})) == "flux2-dev"
    assert families.detect(Configs({"_class_name": "QwenImage21Pipeline"}, transformer={})) == "qwen-image-2.1"
    assert families.detect_keys(["double_blocks.0.img_attn.qkv.weight"]) == "flux"
    assert families.detect_keys(["context_embedder.weight", "transformer_blocks.0.x"]) == "sd3"
    assert families.detect_keys(["first_stage_model.x"]) is None


def test_defaults_of_an_unknown_family_are_the_fallbacks():
    assert (
        families.defaults("unknown")
        == families.defaults("sd1")
        == {"steps": 25, "cfg": 7.0, "scheduler": "dpm++2m-karras"}
    )
    assert families.defaults("sdxl-refiner") == families.defaults("sd1")  # no settings of its own
    assert families.defaults("sdxl-inpaint")["cfg"] == 6.0  # an inpainting variant takes its family's


def test_an_unknown_option_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown family option"):
        families.get("sd1").takes("controlnets")


# ---------------------------------------------------------------- nothing outside knows a family by name

# "bundled" and "lcm" are also a model source and a distill method / sampler: only the unambiguous names
NAMES = {n for n in BUILTIN - {"bundled", "lcm"}} | {f"{n}-inpaint" for n in BUILTIN - {"bundled", "lcm"}}


def _is_name(node) -> bool:
    return isinstance(node, ast.Constant) and node.value in NAMES


def _branches_on_names(tree) -> list[int]:
    """Lines comparing with a family name (`== "flux"`, `in ("sd3", "flux")`) or keying a table by one."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            flat = [e for s in sides for e in (s.elts if isinstance(s, (ast.Tuple, ast.List, ast.Set)) else [s])]
            if any(_is_name(e) for e in flat):
                lines.append(node.lineno)
        elif isinstance(node, ast.Dict) and any(k is not None and _is_name(k) for k in node.keys):
            lines.append(node.lineno)
    return lines


def test_no_code_outside_the_families_package_branches_on_a_family_name():
    found = {}
    for file in sorted(PACKAGE.rglob("*.py")):
        rel = file.relative_to(PACKAGE).as_posix()
        if rel.startswith(("families/", "training/")):  # the data itself; recipes are tools, not runtime
            continue
        lines = _branches_on_names(ast.parse(file.read_text(encoding="utf-8")))
        if lines:
            found[rel] = lines
    assert found == {"fit.py": [14]}  # its MODELS table is keyed by model (alias) names, and "sdxl" is one
    # and the check sees what it looks for
    assert _branches_on_names(ast.parse('if family == "flux": pass\nx = {"sd3": 1}\ny = f in ("sd1", "sd2")')) == [
        1,
        2,
        3,
    ]

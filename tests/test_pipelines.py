"""diffcli.pipelines: library preparation before a model loads; which weights load (safetensors first,
pickle only by flag and only where no safetensors exist); the errors for damaged weights files."""

import inspect
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers import cli, pixels, written


def test_cached_processor_signatures_change_nothing_but_the_lookup(tiny_sd):
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    unet = UNet2DConditionModel.from_pretrained(str(tiny_sd / "unet"), torch_dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 16, 16, generator=gen)
    text = torch.randn(1, 8, unet.config.cross_attention_dim, generator=gen)
    with torch.no_grad():
        before = unet(x, 10, text).sample

    from diffcli.pipelines import prepare_libraries

    prepare_libraries()
    for cls in (AttnProcessor, AttnProcessor2_0):
        sig, code = cls.__call__.__signature__, cls.__call__.__code__
        assert inspect.signature(cls.__call__) is sig  # the lookup now returns the cached one
        # ... which is the function's own: its positional parameters, in order
        assert list(sig.parameters)[: code.co_argcount] == list(code.co_varnames[: code.co_argcount])
        assert {"attn", "hidden_states", "encoder_hidden_states"} <= set(sig.parameters)
    with torch.no_grad():
        assert torch.equal(unet(x, 10, text).sample, before)


# ------------------------------------------------------------------ --allow-pickle and damaged weights

FAST = ["--steps", "2", "--dtype", "float32", "--seed", "5", "--quiet"]
WEIGHTS = {  # component: (safetensors file, pickle file) in the standard layout
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "text_encoder": ("model.safetensors", "pytorch_model.bin"),
}


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _image(model, out, *extra):
    r = cli("txt2img", "castle at dusk", "-m", model, "-o", out, *FAST, *extra)
    assert r.exit_code == 0, r.stderr
    return pixels(written(r)[0])


def _load(path, *, allow_pickle, source="local"):
    from diffcli.device import DeviceChoice
    from diffcli.models.resolve import ModelRef
    from diffcli.pipelines import LoadOptions, load_base

    ref = ModelRef(name=str(path), path=path, source=source, allow_pickle=allow_pickle)
    return load_base(ref, DeviceChoice("cpu", "float32", "test"), LoadOptions(allow_pickle=allow_pickle))


def test_allow_pickle_still_loads_the_bundled_safetensors_model(tmp_path):
    plain = written(cli("txt2img", "castle at dusk", "-o", tmp_path / "a", *FAST))
    r = cli("txt2img", "castle at dusk", "--allow-pickle", "-o", tmp_path / "b", *FAST)
    assert r.exit_code == 0, r.stderr
    assert np.array_equal(pixels(written(r)[0]), pixels(plain[0]))


def test_safetensors_win_over_pickle_weights_beside_them(tiny_sd, tmp_path):
    """--allow-pickle permits pickle weights; it does not prefer them: a .bin of zeros next to each
    .safetensors file is never read."""
    model = _copy(tiny_sd, tmp_path / "both")
    for comp, (st, pkl) in WEIGHTS.items():
        zeros = {k: torch.zeros_like(v) for k, v in load_file(str(model / comp / st)).items()}
        torch.save(zeros, model / comp / pkl)
    safe = _image(tiny_sd, tmp_path / "safe")
    assert np.array_equal(_image(model, tmp_path / "out", "--allow-pickle"), safe)
    pipe = _load(model, allow_pickle=True)
    for comp, (st, _) in WEIGHTS.items():
        expected = load_file(str(model / comp / st))
        state = getattr(pipe, comp).state_dict()
        assert all(torch.equal(state[k].float(), v.float()) for k, v in expected.items() if k in state), comp


def test_allow_pickle_loads_pickle_only_where_no_safetensors_exist(tiny_sd, tmp_path):
    """One component with pickle weights only: it loads from them; the others still load from safetensors."""
    model = _copy(tiny_sd, tmp_path / "mixed")
    st = model / "unet" / WEIGHTS["unet"][0]
    torch.save(load_file(str(st)), model / "unet" / WEIGHTS["unet"][1])
    st.unlink()
    r = cli("txt2img", "castle at dusk", "-m", model, "-o", tmp_path / "refused", *FAST)
    assert r.exit_code == 2 and "--allow-pickle" in r.stderr
    # said once, as our own warning event: no stray library log line among the JSON events on stderr
    r = cli(
        "txt2img",
        "castle at dusk",
        "-m",
        model,
        "-o",
        tmp_path / "json",
        "--steps",
        "1",
        "--dtype",
        "float32",
        "--json",
        "--allow-pickle",
    )
    assert r.exit_code == 0, r.stderr
    events = [json.loads(line) for line in r.stderr.splitlines()]
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert any("unet loaded from pickle weights" in w for w in warnings), warnings
    assert np.array_equal(_image(model, tmp_path / "out", "--allow-pickle"), _image(tiny_sd, tmp_path / "safe"))


def test_a_folder_with_only_pickle_weights_is_still_refused_at_load(tiny_sd, tmp_path):
    from diffcli.errors import UsageError

    model = _copy(tiny_sd, tmp_path / "pickled")
    st = model / "unet" / WEIGHTS["unet"][0]
    torch.save(load_file(str(st)), model / "unet" / WEIGHTS["unet"][1])
    st.unlink()
    with pytest.raises(UsageError, match="no safetensors weights; pickle weights are refused unless --allow-pickle"):
        _load(model, allow_pickle=False)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garble_header(path):
    data = bytearray(path.read_bytes())
    data[8:24] = b"\x00\xff" * 8  # inside the JSON header
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _garble_header], ids=["truncated", "garbled-header"])
@pytest.mark.parametrize("comp", ["unet", "text_encoder"])
@pytest.mark.parametrize("flags", [[], ["--allow-pickle"]], ids=["safetensors-only", "allow-pickle"])
def test_a_damaged_safetensors_file_is_named_not_blamed_on_pickle(tiny_sd, tmp_path, damage, comp, flags):
    model = _copy(tiny_sd, tmp_path / "damaged")
    damage(model / comp / WEIGHTS[comp][0])
    r = cli("txt2img", "castle at dusk", "-m", model, "-o", tmp_path / "out", *FAST, *flags)
    assert r.exit_code == 1, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert f"{comp}/{WEIGHTS[comp][0]}" in line and "damaged" in line, line
    assert "allow-pickle" not in line and "no safetensors" not in line, line
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize(
    "source, advice",
    [
        ("hub", "run `diffcli models verify {name} --repair` to fetch it again"),
        ("url", "run `diffcli models verify {name} --repair` to fetch it again"),
        ("bundled", "`diffcli models verify {name}` checks every shipped file; reinstall diffcli"),
        ("local", "replace it with an intact copy"),
    ],
)
def test_the_advice_for_a_damaged_file_fits_where_the_model_came_from(tiny_sd, tmp_path, source, advice):
    from diffcli.errors import RuntimeFailure

    model = _copy(tiny_sd, tmp_path / "snapshot")
    _truncate(model / "unet" / WEIGHTS["unet"][0])
    with pytest.raises(RuntimeFailure) as info:
        _load(model, allow_pickle=False, source=source)
    msg = str(info.value)
    assert msg.startswith(f"{model}: damaged weights file unet/diffusion_pytorch_model.safetensors: ")
    assert advice.format(name=model) in msg and "allow-pickle" not in msg


# ------------------------------------------------------------------ task pipelines without AutoPipeline


def test_task_classes_are_those_of_diffusers_auto_pipelines():
    import diffusers
    from diffusers.pipelines import auto_pipeline as ap

    from diffcli import families

    mappings = {
        "txt2img": ap.AUTO_TEXT2IMAGE_PIPELINES_MAPPING,
        "img2img": ap.AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
        "inpaint": ap.AUTO_INPAINT_PIPELINES_MAPPING,
    }
    checked = set()
    for family in families.families().values():
        if not family.pipelines:
            continue
        assert all(isinstance(getattr(diffusers, n), type) for n in family.pipelines.values()), family.name
        if "txt2img" not in family.pipelines:  # a model made for other tasks only (an edit model)
            continue
        auto_name = ap._get_model(family.pipelines["txt2img"])  # AutoPipeline's name of the family
        for task, name in family.pipelines.items():
            if task not in mappings:  # (edit: a task AutoPipeline has no mapping for)
                continue
            if auto_name in mappings[task]:
                assert mappings[task][auto_name].__name__ == name, (family.name, task)
                assert ap._get_model(name) == auto_name  # a base of this class is this family's for AutoPipeline too
                checked.add((auto_name, task))
    # every task of the families AutoPipeline maps fully (diffusers 0.42 maps Chroma's txt2img only)
    for auto_name in ("stable-diffusion", "stable-diffusion-xl", "stable-diffusion-3", "flux"):
        assert {(auto_name, task) for task in mappings} <= checked


@pytest.mark.parametrize("model", ["tiny_sd", "tiny_sdxl", "tiny_inpaint", "tiny-lcm"])
def test_task_pipelines_are_built_as_auto_pipeline_builds_them(model, request):
    from diffusers import (
        AutoPipelineForImage2Image,
        AutoPipelineForInpainting,
        AutoPipelineForText2Image,
        DiffusionPipeline,
    )

    from diffcli import families
    from diffcli.bundled import model_dir
    from diffcli.pipelines import _task_class, switch_pipeline

    path = (
        model_dir(model) if model == "tiny-lcm" else request.getfixturevalue(model)
    )  # tiny-lcm: an AutoencoderTiny VAE
    base = DiffusionPipeline.from_pretrained(str(path), torch_dtype=torch.float32)
    auto = {
        "txt2img": AutoPipelineForText2Image,
        "img2img": AutoPipelineForImage2Image,
        "inpaint": AutoPipelineForInpainting,
    }
    assert families.pipeline_class_for(type(base).__name__, "txt2img") is not None  # a family's own class
    for task, auto_cls in auto.items():
        ours, theirs = switch_pipeline(_task_class(type(base).__name__, task), base), auto_cls.from_pipe(base)
        assert type(ours) is type(theirs), task
        assert ours.components.keys() == theirs.components.keys()
        assert all(ours.components[k] is theirs.components[k] for k in ours.components), task
        assert dict(ours.config) == dict(theirs.config), task


def test_a_bundled_txt2img_imports_only_its_own_pipeline(tmp_path):
    """The cold start of the main job imports the pipeline classes it runs, not diffusers' AutoPipeline
    module (which imports every pipeline family it maps)."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from diffcli.cli.app import main\n"
        f"sys.argv = ['diffcli', 'txt2img', 'castle at dusk', '--steps', '1', '-q', '-o', {str(tmp_path)!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('diffusers.pipelines.'))))\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    mods = {line for line in r.stdout.split() if line.startswith("diffusers.")}  # (after the written path)
    assert "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion" in mods
    assert "diffusers.pipelines.auto_pipeline" not in mods
    families = {m.split(".")[2] for m in mods}
    assert families <= {"pipeline_utils", "pipeline_loading_utils", "stable_diffusion", "transformers_loading_utils"}, (
        families
    )

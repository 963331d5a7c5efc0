"""`diffcli edit` through a resident server: the socket client's edits and OpenAI's `/v1/images/edits` on a
model that edits by instruction are the pixels of plain diffusers."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_edit_models import (
    QWEN_EDIT_GUIDANCE,
    build_ip2p,
    build_kontext,
    noise_image,
    plain_edit,
    plain_ip2p,
    plain_kontext,
)

from serving import RunningServer, server_env


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("edit-models")
    return {"ip2p": build_ip2p(folder / "tiny-ip2p"), "kontext": build_kontext(folder / "tiny-kontext")}


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    directory = Path(tempfile.mkdtemp(prefix="dcs", dir="/tmp"))
    out = tmp_path_factory.mktemp("http-out")
    env = {**server_env(tmp_path_factory.mktemp("serverhome")), "DIFFCLI_CPU_BF16": "0"}  # auto: float32
    server = RunningServer(directory, env, ["--idle", "10m", "--http", "127.0.0.1:0", "--output-dir", str(out)])
    server.http = server.status()["http"]
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def _in_hub_cache(server, folder: Path, repo: str) -> str:
    commit = "c" * 40
    cached = Path(server.env["HF_HUB_CACHE"]) / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, cached / "snapshots" / commit)
    (cached / "refs").mkdir()
    (cached / "refs" / "main").write_text(commit)
    return repo


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_the_server_edits_as_the_command_does(web, models, tmp_path):
    source = noise_image(tmp_path / "in.png", (32, 32))
    done = web.status()["jobs_done"]
    for name, instruction, plain in (("ip2p", "make it red", plain_ip2p), ("kontext", "red door", plain_kontext)):
        served = web.cli(
            "edit", source, instruction, "-m", models[name], "--seed", "6", "--steps", "2", "--dtype", "float32",
            "-o", tmp_path / name, "--quiet",
        )  # fmt: skip
        assert served.returncode == 0, served.stderr + web.log()
        with Image.open(served.stdout.split()[0]) as image:
            got = np.asarray(image.convert("RGB"), dtype=np.int16)
        assert np.array_equal(got, plain(models[name], source, instruction, 6)), name
    assert web.status()["jobs_done"] == done + 2  # (run by the server, not by the command itself)


def test_openai_edits_on_an_edit_model_is_an_edit(web, models, tmp_path):
    openai = pytest.importorskip("openai")
    repo = _in_hub_cache(web, models["ip2p"], "org/tiny-ip2p")
    client = openai.OpenAI(base_url=f"http://{web.http}/v1", api_key="unused", max_retries=0, timeout=120)
    source = noise_image(tmp_path / "in.png", (32, 32))
    with Image.open(source) as image:
        data = _png(image)
    edited = client.images.edit(
        image=("in.png", data, "image/png"),
        prompt="make it red",
        model=repo,
        response_format="b64_json",
        extra_body={"seed": 8, "steps": 2, "image_cfg": 1.2},
    )
    with Image.open(io.BytesIO(base64.b64decode(edited.data[0].b64_json))) as result:
        got = np.asarray(result.convert("RGB"), dtype=np.int16)
        job = json.loads(result.info["diffcli"])["job"]
    assert job["task"] == "edit" and job["prompt"] == "make it red" and job["image_cfg"] == 1.2
    assert np.array_equal(got, plain_ip2p(models["ip2p"], source, "make it red", 8, image_cfg=1.2))
    # an edit model takes no mask where its family edits the whole image: a 400 that says so
    mask = Image.new("RGBA", (32, 32), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 16, 32))
    with pytest.raises(openai.BadRequestError, match="edits the whole image"):
        client.images.edit(
            image=("in.png", data, "image/png"), mask=("m.png", _png(mask), "image/png"), prompt="x", model=repo
        )
    # image_cfg on a model that does not edit by instruction: refused, not ignored
    with pytest.raises(openai.BadRequestError, match="image_cfg"):
        client.images.edit(image=("in.png", data, "image/png"), prompt="x", model="tiny", extra_body={"image_cfg": 1})


def test_openai_edits_with_two_reference_images(web, tiny_flux2_klein, tmp_path):
    """Several `image[]` parts on a model that takes reference images (FLUX.2 [klein]): the first is the image
    to edit, the others its references, as `diffcli edit IMAGE -r A -r B` takes them (the pipeline's one `image`
    list, the input first); on a model that takes no references, a 400 that says so."""
    openai = pytest.importorskip("openai")
    import torch
    from diffusers import Flux2KleinPipeline

    repo = _in_hub_cache(web, tiny_flux2_klein, "org/tiny-klein")
    client = openai.OpenAI(base_url=f"http://{web.http}/v1", api_key="unused", max_retries=0, timeout=120)
    paths = [noise_image(tmp_path / f"{name}.png", (64, 64), seed) for seed, name in enumerate(("in", "a", "b"))]
    edited = client.images.edit(
        image=[(p.name, p.read_bytes(), "image/png") for p in paths],
        prompt="make it red",
        model=repo,
        response_format="b64_json",
        extra_body={"seed": 5, "steps": 2},
    )
    with Image.open(io.BytesIO(base64.b64decode(edited.data[0].b64_json))) as result:
        got = np.asarray(result.convert("RGB"), dtype=np.int16)
        record = json.loads(result.info["diffcli"])
    assert record["job"]["task"] == "edit", record
    # the public record names no server path, but each reference's hash (what --from finds them by)
    hashes = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths[1:]]
    assert [r["sha256"] for r in record["references"]] == hashes
    pipe = Flux2KleinPipeline.from_pretrained(tiny_flux2_klein, torch_dtype=torch.float32)
    plain = plain_edit(tiny_flux2_klein, paths, "make it red", 5, (64, 64), pipe=pipe, guidance_scale=0.0)
    assert np.array_equal(got, plain)
    alone = plain_edit(tiny_flux2_klein, paths[:1], "make it red", 5, (64, 64), pipe=pipe, guidance_scale=0.0)
    assert not np.array_equal(got, alone)  # the references took part
    ip2p = _in_hub_cache(web, build_ip2p(tmp_path / "ip2p"), "org/tiny-ip2p-refs")
    with pytest.raises(openai.BadRequestError, match="reference"):
        client.images.edit(image=[(p.name, p.read_bytes(), "image/png") for p in paths[:2]], prompt="x", model=ip2p)


def test_the_server_runs_a_qwen_image_edit_plus_edit_with_references(web, tmp_path_factory, tmp_path):
    """Where torchvision is installed (Qwen-Image-Edit's processor needs it): the resident server's edit with two
    references is the pixels of QwenImageEditPlusPipeline."""
    pytest.importorskip("torchvision", reason="transformers builds the Qwen2-VL processor only with torchvision")
    from tiny_edit_models import build_qwen_image_edit

    model = build_qwen_image_edit(tmp_path_factory.mktemp("models") / "tiny-qwen-edit-plus")
    source = noise_image(tmp_path / "in.png", (32, 32), seed=0)
    refs = [noise_image(tmp_path / f"ref{i}.png", (32, 32), seed=i) for i in (1, 2)]
    served = web.cli(
        "edit", source, "put them together", "-m", model, "-r", refs[0], "-r", refs[1], "--seed", "6",
        "--steps", "2", "--dtype", "float32", "-o", tmp_path / "served", "--quiet",
    )  # fmt: skip
    assert served.returncode == 0, served.stderr + web.log()
    with Image.open(served.stdout.split()[0]) as image:
        got = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert np.array_equal(
        got, plain_edit(model, [source, *refs], "put them together", 6, (32, 32), **QWEN_EDIT_GUIDANCE)
    )


def test_the_pages_start_image_on_an_edit_model_is_an_edit(web, models, tmp_path):
    """POST /v1/jobs (the page's door) with a start image on a model that edits: an edit, the prompt its
    instruction (the A1111 body's strength is not one of an edit's settings)."""
    import urllib.request

    from test_serve_events import EventStream

    from test_serve_http import call

    repo = _in_hub_cache(web, models["ip2p"], "org/tiny-ip2p-page")
    source = noise_image(tmp_path / "in.png", (32, 32))
    body = {
        "prompt": "make it red",
        "init_images": [base64.b64encode(source.read_bytes()).decode()],
        "steps": 2,
        "seed": 9,
        "cfg_scale": 7.5,
        "override_settings": {"sd_model_checkpoint": repo},
    }
    status, answer = call(web, "POST", "/v1/jobs", body)
    assert status == 202, answer
    stream = EventStream(web.http, answer["events"] + "&previews=0")
    events = list(stream.events())
    stream.close()
    assert events[-1]["event"] == "done", events
    name = next(e["path"] for e in events if e["event"] == "saved")
    with urllib.request.urlopen(f"http://{web.http}/v1/gallery/{name}", timeout=60) as response:
        made = Image.open(io.BytesIO(response.read()))
        made.load()
    job = json.loads(made.info["diffcli"])["job"]
    assert job["task"] == "edit" and job["prompt"] == "make it red" and job.get("strength") is None
    got = np.asarray(made.convert("RGB"), dtype=np.int16)
    assert np.array_equal(got, plain_ip2p(models["ip2p"], source, "make it red", 9))

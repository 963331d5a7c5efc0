"""Issue 26, item 3: over HTTP a name is judged by its text alone, LoRAs come only from the server's LoRA
folder, and no reply carries a server path (a real server on 127.0.0.1, started in a folder of its own
that holds files a request could try to reach by name)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from serving import RunningServer, server_env

# an absolute POSIX path in a reply: "/" at the start of a word, quote or parenthesis, then a name
_ABSOLUTE = re.compile(r"(?:^|[\s'\"(=])(/[^\s'\"()]+)")


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """A server whose working directory holds a model folder, plain files and a LoRA-named file."""
    cwd = tmp_path_factory.mktemp("servercwd")
    (cwd / "probe" / "present").mkdir(parents=True)
    (cwd / "probe" / "present" / "model_index.json").write_text("{}")
    (cwd / "notes").write_text("not a LoRA")
    (cwd / "cwdlora.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    home = tmp_path_factory.mktemp("serverhome")
    directory = Path(tempfile.mkdtemp(prefix="dcs", dir="/tmp"))
    out = tmp_path_factory.mktemp("http-out")
    server = RunningServer(
        directory, server_env(home), ["--idle", "10m", "--http", "127.0.0.1:0", "--output-dir", str(out)], cwd=cwd
    )
    server.http, server.out, server.cwd, server.home = server.status()["http"], out, cwd, home
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def call(server, path: str, body: dict) -> tuple[int, str]:
    """(status, the reply's text) of a POST to SERVER's HTTP API."""
    request = urllib.request.Request(
        f"http://{server.http}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def assert_no_server_path(server, text: str) -> None:
    for folder in (server.cwd, server.out, server.home, Path(tempfile.gettempdir())):
        assert str(folder) not in text, text
    assert ".inputs" not in text, text
    assert all(path.startswith(("/sdapi/", "/v1/")) for path in _ABSOLUTE.findall(text)), text


@pytest.mark.parametrize(
    "endpoint, field", [("/v1/images/generations", "model"), ("/sdapi/v1/txt2img", "sd_model_checkpoint")]
)
@pytest.mark.parametrize("present, absent", [("probe/present", "probe/absent"), ("notes", "nothing")])
def test_a_model_name_gets_the_same_answer_whatever_the_servers_folder_holds(probed, endpoint, field, present, absent):
    def answer(name: str) -> tuple[int, str]:
        body = {"prompt": "x", "steps": 1}
        body.update({"model": name} if field == "model" else {"override_settings": {field: name}})
        status, text = call(probed, endpoint, body)
        assert_no_server_path(probed, text)
        return status, text.replace(name, "NAME")

    assert answer(present) == answer(absent)
    assert answer(present)[0] in (400, 422)


@pytest.mark.parametrize(
    "present, absent", [("notes", "nothing"), ("cwdlora.safetensors", "absent.safetensors"), ("cwdlora", "absent")]
)
def test_a_prompt_lora_is_looked_up_in_the_lora_folder_only(probed, present, absent):
    def answer(name: str) -> tuple[int, str]:
        status, text = call(probed, "/sdapi/v1/txt2img", {"prompt": f"castle <lora:{name}:0.5>", "steps": 1})
        assert_no_server_path(probed, text)
        return status, text.replace(name, "NAME")

    assert answer(present) == answer(absent)
    status, text = answer(absent)
    assert status == 422 and "LoRA folder" in json.loads(text)["detail"], text


def test_errors_about_uploaded_images_name_the_field_not_the_servers_file(probed):
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(png, format="PNG")
    image = base64.b64encode(png.getvalue()).decode()
    text_file = base64.b64encode(b"not an image at all").decode()
    small = io.BytesIO()
    Image.new("L", (32, 32), 255).save(small, format="PNG")
    for body, needle in (
        ({"init_images": [text_file]}, "init_images[0]"),
        ({"init_images": [image], "mask": base64.b64encode(small.getvalue()).decode()}, "mask"),
    ):
        status, text = call(probed, "/sdapi/v1/img2img", {"prompt": "x", "steps": 1, **body})
        assert status == 422, text
        assert_no_server_path(probed, text)
        assert needle in json.loads(text)["detail"], text


def test_listed_models_and_served_images_carry_no_server_path(probed):
    request = urllib.request.Request(f"http://{probed.http}/sdapi/v1/sd-models")
    with urllib.request.urlopen(request, timeout=60) as response:
        listing = response.read().decode()
    assert "tiny" in listing
    assert_no_server_path(probed, listing)
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 120, 200)).save(png, format="PNG")
    status, text = call(
        probed,
        "/sdapi/v1/img2img",
        {
            "prompt": "watercolor",
            "steps": 2,
            "seed": 1,
            "denoising_strength": 0.5,
            "init_images": [base64.b64encode(png.getvalue()).decode()],
        },
    )
    assert status == 200, text
    served = Image.open(io.BytesIO(base64.b64decode(json.loads(text)["images"][0])))
    record = json.loads(served.info["diffcli"])
    assert record["job"]["task"] == "img2img" and record["job"]["image"] is None
    assert_no_server_path(probed, served.info["diffcli"] + served.info["parameters"])


def test_a_served_record_names_its_loras_by_their_place_in_the_lora_folder():
    from diffcli.metadata import without_paths

    record = {
        "job": {
            "image": "/srv/out/.inputs/ab.img",
            "mask": "/srv/out/.inputs/cd.img",
            "lora": ["/srv/loras/style/a.safetensors:0.5"],
        },
        "model": {
            "name": "tiny",
            "loras": [{"name": "a", "path": "/srv/loras/style/a.safetensors", "weight": 0.5, "sha256": "0" * 64}],
        },
    }
    public = without_paths(record, lora_folder=Path("/srv/loras"))
    assert public["job"] == {"image": None, "mask": None, "lora": ["style/a.safetensors:0.5"]}
    assert public["model"]["loras"][0]["path"] == "style/a.safetensors"
    assert "/srv" not in json.dumps(public)

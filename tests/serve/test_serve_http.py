"""The HTTP API (`diffcli serve --http`): A1111 and OpenAI endpoints on a real server over 127.0.0.1."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from serving import RunningServer, server_env

KEY = "k" * 24


def call(server, method: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None):
    """(status, decoded JSON) of one request to SERVER's HTTP API."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(
        f"http://{server.http}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def decode(b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    img.load()
    return img


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    import shutil
    import tempfile
    from pathlib import Path

    directory = Path(tempfile.mkdtemp(prefix="dcs", dir="/tmp"))
    out = tmp_path_factory.mktemp("http-out")
    server = RunningServer(
        directory,
        server_env(tmp_path_factory.mktemp("serverhome")),
        ["--idle", "10m", "--http", "127.0.0.1:0", "--output-dir", str(out)],
    )
    server.http = server.status()["http"]
    server.out = out
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def test_listing_endpoints(web):
    status, samplers = call(web, "GET", "/sdapi/v1/samplers")
    assert status == 200 and {"name": "Euler a", "aliases": ["euler-a"], "options": {}} in samplers
    status, models = call(web, "GET", "/sdapi/v1/sd-models")
    assert status == 200 and "tiny" in [m["model_name"] for m in models]
    status, progress = call(web, "GET", "/sdapi/v1/progress")
    assert status == 200 and progress["progress"] == 0.0 and progress["state"]["job_count"] == 0


def test_a1111_txt2img_is_the_image_the_cli_makes(web, tmp_path):
    body = {
        "prompt": "red house at night",
        "steps": 2,
        "seed": 7,
        "cfg_scale": 4,
        "sampler_name": "Euler a",
        "batch_size": 2,
        "n_iter": 1,
    }
    status, answer = call(web, "POST", "/sdapi/v1/txt2img", body)
    assert status == 200, answer
    info = json.loads(answer["info"])
    assert info["all_seeds"] == [7, 8] and answer["parameters"] == body
    cli = web.cli(
        "txt2img",
        "red house at night",
        "--steps",
        "2",
        "--seed",
        "7",
        "--cfg",
        "4",
        "--scheduler",
        "euler-a",
        "-n",
        "2",
        "--batch-size",
        "2",
        "-o",
        tmp_path,
        "--quiet",
    )
    assert cli.returncode == 0, cli.stderr
    for b64, path, text in zip(answer["images"], cli.stdout.split(), info["infotexts"]):
        image = decode(b64)
        with Image.open(path) as made:
            assert np.array_equal(np.asarray(image), np.asarray(made.convert("RGB")))
            assert image.info["parameters"] == made.info["parameters"] == text
    assert [p for p in os.listdir(web.out) if not p.startswith(".")] == []  # save_images is false


def test_img2img_and_inpaint_take_images_in_the_body(web):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 120, 200)).save(buffer, format="PNG")
    source = base64.b64encode(buffer.getvalue()).decode()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    body = {
        "prompt": "watercolor",
        "steps": 2,
        "seed": 1,
        "denoising_strength": 0.5,
        "init_images": [source],
        "save_images": True,
    }
    status, answer = call(web, "POST", "/sdapi/v1/img2img", body)
    assert status == 200, answer
    assert decode(answer["images"][0]).size == (64, 64)
    status, answer = call(
        web,
        "POST",
        "/sdapi/v1/img2img",
        {**body, "mask": base64.b64encode(buffer.getvalue()).decode(), "save_images": False},
    )
    assert status == 200, answer
    inpainted = np.asarray(decode(answer["images"][0]).convert("RGB"))
    assert (inpainted[:, 32:] == (30, 120, 200)).all()  # outside the mask: the original, exactly
    saved = [p for p in os.listdir(web.out) if not p.startswith(".")]
    assert len(saved) == 1 and not (web.out / ".inputs").exists()  # inputs are gone after the job


@pytest.mark.parametrize(
    "path, body, status, detail",
    [
        ("/sdapi/v1/txt2img", {"prompt": "x", "steps": 0}, 422, "--steps must be between 1 and 1000 (got 0)"),
        ("/sdapi/v1/txt2img", {"prompt": "x", "steps": "3"}, 422, "'steps' must be an integer, not a string"),
        ("/sdapi/v1/txt2img", {"prompt": "x", "width": 60}, 422, "--width 60 is not valid for this model"),
        (
            "/sdapi/v1/txt2img",
            {"prompt": "x", "enable_hr": True, "hr_upscaler": "ESRGAN_4x"},
            422,
            "hr_upscaler 'ESRGAN_4x' is not supported; use one of: Lanczos, Latent, Nearest, None",
        ),
        ("/sdapi/v1/txt2img", {"prompt": "x", "enable_hr": True, "hr_scale": 8}, 422, "--hires must be a scale over 1"),
        ("/sdapi/v1/txt2img", {"prompt": "x", "sampler_name": "Nope"}, 422, "unknown sampler 'Nope'"),
        (
            "/sdapi/v1/txt2img",
            {"prompt": "x", "override_settings": {"sd_model_checkpoint": "/etc"}},
            422,
            "not a path or URL",
        ),
        (
            "/sdapi/v1/txt2img",
            {"prompt": "x", "override_settings": {"sd_model_checkpoint": "org/absent"}},
            422,
            "org/absent",
        ),
        ("/sdapi/v1/img2img", {"prompt": "x", "init_images": ["not base64!"]}, 422, "not base64 image data"),
        (
            "/sdapi/v1/img2img",
            {"prompt": "x", "init_images": [base64.b64encode(b"text").decode()]},
            422,
            "not an image in a supported format",
        ),
        ("/v1/images/generations", {"prompt": "x", "model": "../../etc/passwd"}, 400, "not a path"),
        # absent paths get the same answer as present ones: a client learns nothing of the server's disk
        ("/v1/images/generations", {"prompt": "x", "model": "../../no/such/place"}, 400, "not a path"),
        (
            "/sdapi/v1/txt2img",
            {"prompt": "x", "override_settings": {"sd_model_checkpoint": "/no/such.safetensors"}},
            422,
            "not a path or URL",
        ),
        (
            "/sdapi/v1/txt2img",
            {"prompt": "x", "override_settings": {"sd_model_checkpoint": "http://127.0.0.1/m.safetensors"}},
            422,
            "not a path or URL",
        ),
        ("/v1/images/generations", {"prompt": "x", "response_format": "url"}, 400, "only response_format 'b64_json'"),
        ("/nope", {}, 404, "no such endpoint"),
        ("/sdapi/v1/txt2img", {"prompt": "x <lora:/etc/secret.safetensors:1>"}, 422, "not a path"),
        ("/v1/images/generations", {"prompt": "x", "negative_prompt": "<lora:../up/a:0.5>"}, 400, "not a path"),
    ],
)
def test_bad_requests_get_4xx_json_errors(web, path, body, status, detail):
    got, answer = call(web, "POST", path, body)
    message = answer["error"]["message"] if isinstance(answer.get("error"), dict) else answer["detail"]
    assert got == status and detail in message, answer


def test_request_hygiene(web):
    assert call(web, "POST", "/sdapi/v1/txt2img", raw=b"{not json")[0] == 400
    assert call(web, "POST", "/sdapi/v1/txt2img", {"prompt": "x"}, headers={"Content-Type": "text/plain"})[0] == 415
    assert call(web, "GET", "/sdapi/v1/samplers", headers={"Host": "evil.example:80"})[0] == 403
    assert call(web, "GET", "/sdapi/v1/txt2img")[0] == 405
    host, port = web.http.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", "/sdapi/v1/txt2img")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(10**9))
    connection.endheaders()
    assert connection.getresponse().status == 413


def test_openai_generations(web):
    body = {"prompt": "castle", "n": 2, "size": "64x64", "model": "tiny-lcm", "vae_decoder": "full"}  # 4 steps: quick
    status, answer = call(web, "POST", "/v1/images/generations", body)
    assert status == 200 and len(answer["data"]) == 2
    assert all(decode(item["b64_json"]).size == (64, 64) for item in answer["data"])
    for folder in ("./decoders/taesd", "madebyollin/taesd", "/tmp"):  # never a folder: only full or tiny
        status, refused = call(web, "POST", "/v1/images/generations", {**body, "vae_decoder": folder})
        assert status == 400 and "use full or tiny" in json.dumps(refused)  # OpenAI routes answer 400


def test_progress_and_interrupt(web):
    result = {}
    body = {"prompt": "castle", "steps": 400, "seed": 1, "sampler_name": "Euler"}
    worker = threading.Thread(target=lambda: result.update(answer=call(web, "POST", "/sdapi/v1/txt2img", body)))
    worker.start()
    deadline = time.time() + 60
    while True:
        _, progress = call(web, "GET", "/sdapi/v1/progress")
        if progress["state"]["sampling_step"] >= 2:
            break
        assert time.time() < deadline
        time.sleep(0.1)
    assert 0 < progress["progress"] < 1 and progress["state"]["sampling_steps"] == 400
    assert call(web, "POST", "/sdapi/v1/interrupt", {}) == (200, {})
    worker.join(timeout=60)
    status, answer = result["answer"]
    assert status == 200 and answer["images"] == [] and json.loads(answer["info"])["interrupted"] is True


def test_beyond_loopback_needs_a_key_and_a_key_is_checked(start_server):
    p = subprocess.run(
        [sys.executable, "-m", "diffcli", "serve", "--http", "0.0.0.0:7860"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 2 and "needs --api-key" in p.stderr
    server = start_server("--http", "127.0.0.1:0", "--api-key", KEY)
    server.http = server.status()["http"]
    assert call(server, "GET", "/sdapi/v1/samplers")[0] == 401
    assert call(server, "GET", "/sdapi/v1/samplers", headers={"Authorization": "Bearer " + "x" * 24})[0] == 401
    assert call(server, "GET", "/sdapi/v1/samplers", headers={"Authorization": f"Bearer {KEY}"})[0] == 200


# -- clients written by others ------------------------------------------------------------------------


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def test_webuiapi_hires_fix_is_twice_the_size_and_the_cli_image(web, tmp_path):
    webuiapi = pytest.importorskip("webuiapi")
    host, port = web.http.rsplit(":", 1)
    client = webuiapi.WebUIApi(host=host, port=int(port))
    result = client.txt2img(
        prompt="red house",
        steps=2,
        seed=5,
        cfg_scale=5,
        width=64,
        height=64,
        sampler_name="Euler",
        enable_hr=True,
        hr_scale=2,
    )  # webuiapi's defaults: hr_upscaler "Latent", denoising_strength 0.7, hr_second_pass_steps 0
    assert result.image.size == (128, 128)
    infotext = result.info["infotexts"][0]
    assert "Size: 64x64" in infotext and "Hires upscale: 2, Hires steps: 2, Hires upscaler: Latent" in infotext
    flags = [
        "--steps",
        "2",
        "--seed",
        "5",
        "--cfg",
        "5",
        "--scheduler",
        "euler",
        "--hires",
        "2",
        "--hires-strength",
        "0.7",
    ]
    cli = web.cli("txt2img", "red house", *flags, "--hires-upscaler", "latent", "-o", tmp_path, "--quiet")
    assert cli.returncode == 0, cli.stderr
    with Image.open(cli.stdout.split()[0]) as made:
        assert np.array_equal(np.asarray(result.image.convert("RGB")), np.asarray(made.convert("RGB")))
        assert infotext == made.info["parameters"]


def test_webuiapi_a1111_client_gets_the_cli_image(web, tmp_path):
    webuiapi = pytest.importorskip("webuiapi")
    host, port = web.http.rsplit(":", 1)
    client = webuiapi.WebUIApi(host=host, port=int(port))
    result = client.txt2img(
        prompt="blue car at noon", steps=2, seed=11, cfg_scale=5, width=64, height=64, sampler_name="Euler"
    )
    cli = web.cli(
        "txt2img",
        "blue car at noon",
        "--steps",
        "2",
        "--seed",
        "11",
        "--cfg",
        "5",
        "--scheduler",
        "euler",
        "-o",
        tmp_path,
        "--quiet",
    )
    assert cli.returncode == 0, cli.stderr
    with Image.open(cli.stdout.split()[0]) as made:
        assert np.array_equal(np.asarray(result.image.convert("RGB")), np.asarray(made.convert("RGB")))
        assert result.info["infotexts"][0] == made.info["parameters"]
    edited = client.img2img(
        images=[result.image],
        prompt="blue car at night",
        steps=2,
        seed=3,
        denoising_strength=0.5,
        width=64,
        height=64,
        sampler_name="Euler",
    )
    assert edited.image.size == (64, 64) and json.loads(json.dumps(edited.info))["all_seeds"] == [3]
    assert [m["model_name"] for m in client.get_sd_models()] and client.get_samplers()


def in_hub_cache(server, folder, repo: str) -> str:
    """FOLDER as hub model REPO in SERVER's hub cache (a request names models, never paths)."""
    import shutil
    from pathlib import Path

    commit = "b" * 40
    cached = Path(server.env["HF_HUB_CACHE"]) / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, cached / "snapshots" / commit)
    (cached / "refs").mkdir()
    (cached / "refs" / "main").write_text(commit)
    return repo


def test_a1111_euler_is_the_sampler_of_that_name_that_fits_the_model(web, tiny_flux, tiny_sd, tmp_path):
    flux, sd = in_hub_cache(web, tiny_flux, "org/tiny-flux"), in_hub_cache(web, tiny_sd, "org/tiny-sd")
    body = {
        "prompt": "castle at dusk",
        "steps": 2,
        "seed": 5,
        "width": 32,
        "height": 32,
        "sampler_name": "Euler",
        "scheduler": "Automatic",
    }
    ran = {}
    for model in (flux, sd):
        status, answer = call(
            web, "POST", "/sdapi/v1/txt2img", {**body, "override_settings": {"sd_model_checkpoint": model}}
        )
        assert status == 200, answer
        served = tmp_path / f"{model.replace('/', '-')}.png"
        served.write_bytes(base64.b64decode(answer["images"][0]))
        with Image.open(served) as image:
            ran[model] = json.loads(image.info["diffcli"])["job"]["scheduler"]
            assert "Sampler: Euler," in image.info["parameters"]
    assert ran == {flux: "flow-euler", sd: "euler"}
    # the record names the sampler that ran: --from replays the served FLUX image pixel for pixel
    served = tmp_path / "org-tiny-flux.png"
    again = web.cli("txt2img", "--from", served, "-o", tmp_path / "again", "--quiet")
    assert again.returncode == 0, again.stderr
    with Image.open(served) as a, Image.open(again.stdout.split()[0]) as b:
        assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))
    # an A1111 name with no flow-matching sampler of that name: a 4xx naming the ones there are
    status, answer = call(
        web,
        "POST",
        "/sdapi/v1/txt2img",
        {**body, "sampler_name": "Euler a", "override_settings": {"sd_model_checkpoint": flux}},
    )
    assert status == 422 and "sampler 'Euler a' does not apply to org/tiny-flux" in answer["detail"], answer
    assert "use one of: Euler" in answer["detail"]


def test_openai_library_generates_and_edits(web, tmp_path):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"http://{web.http}/v1", api_key="unused", max_retries=0, timeout=120)
    made = client.images.generate(
        prompt="red house", model="tiny-lcm", n=1, size="64x64", response_format="b64_json", extra_body={"seed": 5}
    )
    image = decode(made.data[0].b64_json)
    cli = web.cli("txt2img", "red house", "--model", "tiny-lcm", "--seed", "5", "-o", tmp_path, "--quiet")
    assert cli.returncode == 0, cli.stderr
    with Image.open(cli.stdout.split()[0]) as same:
        assert np.array_equal(np.asarray(image), np.asarray(same.convert("RGB")))
    # OpenAI's mask rule: the fully transparent pixels are repainted; the rest stays as it was
    source = np.asarray(image.convert("RGB")).copy()
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 32, 64))
    edited = client.images.edit(
        image=("in.png", png_bytes(image), "image/png"),
        mask=("mask.png", png_bytes(mask), "image/png"),
        prompt="red house at night",
        model="tiny-lcm",
        response_format="b64_json",
        extra_body={"seed": 1},
    )
    result = decode(edited.data[0].b64_json)
    got = np.asarray(result.convert("RGB"))
    assert result.info["diffcli"] and json.loads(result.info["diffcli"])["job"]["task"] == "inpaint"
    assert np.abs(got[:, 40:].astype(int) - source[:, 40:]).max() <= 2  # kept (outside the mask blur)
    assert np.abs(got[:, :24].astype(int) - source[:, :24]).mean() > 2  # repainted
    # no mask and an opaque image: an img2img of the whole image
    whole = client.images.edit(
        image=("in.png", png_bytes(image), "image/png"), prompt="castle", model="tiny-lcm", response_format="b64_json"
    )
    assert json.loads(decode(whole.data[0].b64_json).info["diffcli"])["job"]["task"] == "img2img"
    with pytest.raises(openai.BadRequestError, match="exactly one image"):
        client.images.edit(image=[("a.png", png_bytes(image)), ("b.png", png_bytes(image))], prompt="x")


def test_a_page_of_another_site_is_refused(web):
    headers = {"Origin": "http://evil.example"}
    assert call(web, "POST", "/sdapi/v1/txt2img", {"prompt": "x", "steps": 1}, headers=headers)[0] == 403
    assert call(web, "GET", "/sdapi/v1/samplers", headers={"Origin": f"http://{web.http}"})[0] == 200


def test_a_client_that_hangs_up_cancels_its_job(web):
    host, port = web.http.rsplit(":", 1)
    body = json.dumps({"prompt": "castle", "steps": 400, "seed": 1, "sampler_name": "Euler"}).encode()
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", "/sdapi/v1/txt2img", body=body, headers={"Content-Type": "application/json"})
    deadline = time.time() + 60
    while call(web, "GET", "/sdapi/v1/progress")[1]["state"]["sampling_step"] < 2:
        assert time.time() < deadline
        time.sleep(0.1)
    connection.close()  # gone without waiting for the answer
    while (progress := call(web, "GET", "/sdapi/v1/progress")[1])["state"]["job_count"] != 0:
        assert time.time() < deadline, progress
        time.sleep(0.1)
    assert progress["state"]["sampling_step"] == 0  # nothing runs: the job ended long before its 400 steps
    assert "the client went away" in web.log()

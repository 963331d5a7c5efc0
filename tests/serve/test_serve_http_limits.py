"""The HTTP API under attack (`diffcli serve --http`): slow clients, decompression bombs, images of
jobs whose answer is not delivered, deeply nested JSON. A real server over 127.0.0.1; slow clients are
raw sockets in bounded loops, against a short request deadline (DIFFCLI_HTTP_DEADLINE)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import pytest

from serving import RunningServer, server_env
from test_serve_http import call

DEADLINE = 2.0  # seconds a request has to arrive whole, on this test server


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    directory = Path(tempfile.mkdtemp(prefix="dcs", dir="/tmp"))
    out = tmp_path_factory.mktemp("http-out")
    env = {**server_env(tmp_path_factory.mktemp("serverhome")), "DIFFCLI_HTTP_DEADLINE": str(DEADLINE)}
    server = RunningServer(directory, env, ["--idle", "10m", "--http", "127.0.0.1:0", "--output-dir", str(out)])
    server.http = server.status()["http"]
    server.out = out
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def address(server) -> tuple[str, int]:
    host, port = server.http.rsplit(":", 1)
    return host, int(port)


def images_in(folder: Path) -> list[str]:
    return sorted(p for p in os.listdir(folder) if p.endswith(".png"))


# -- 6: slow clients -------------------------------------------------------------------------------------


def test_a_request_that_trickles_in_is_cut_off_at_its_deadline(web):
    """Sixteen clients sending a body one byte at a time (each byte well within any per-read timeout): they
    are cut off when the request deadline passes, and meanwhile progress and --status answer."""
    head = (
        b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    socks = [socket.create_connection(address(web), timeout=5) for _ in range(16)]
    for sock in socks:
        sock.sendall(head)
    t0 = time.monotonic()
    closed: dict[int, float] = {}
    answers: dict[int, bytes] = {}
    answered_meanwhile = None
    for _ in range(int((DEADLINE + 4) / 0.25)):  # bounded: at most about 6 s
        for i, sock in enumerate(socks):
            if i in closed:
                continue
            try:
                if select.select([sock], [], [], 0)[0]:
                    answers[i] = sock.recv(4096)
                    closed[i] = time.monotonic() - t0
                    continue
                sock.send(b" ")
            except OSError:  # reset: closed with bytes of ours unread
                answers[i], closed[i] = b"", time.monotonic() - t0
        if answered_meanwhile is None and time.monotonic() - t0 > 0.5:
            answered_meanwhile = (call(web, "GET", "/sdapi/v1/progress")[0], web.status() is not None)
        if len(closed) == len(socks):
            break
        time.sleep(0.25)
    for sock in socks:
        sock.close()
    assert answered_meanwhile == (200, True)
    assert len(closed) == len(socks), f"still open after {time.monotonic() - t0:.1f} s"
    assert max(closed.values()) < DEADLINE + 2
    assert all(a.startswith(b"HTTP/1.0 408") or a == b"" for a in answers.values()), answers
    assert any(a.startswith(b"HTTP/1.0 408") for a in answers.values()), answers
    assert call(web, "POST", "/sdapi/v1/txt2img", {"prompt": "castle", "steps": 1})[0] == 200


def test_a_bad_deadline_setting_is_a_usage_error():
    p = subprocess.run(
        [sys.executable, "-m", "diffcli", "serve", "--http", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DIFFCLI_HTTP_DEADLINE": "soon"},
    )
    assert p.returncode == 2 and "invalid DIFFCLI_HTTP_DEADLINE 'soon'" in p.stderr and "Traceback" not in p.stderr


def test_connections_still_sending_headers_are_capped(web):
    from diffcli.serve.http import MAX_CONNECTIONS

    socks = [socket.create_connection(address(web), timeout=5) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in socks:
            sock.sendall(b"GET /sdapi/v1/progress HTTP/1.1\r\nHost: 127.0")  # and no more
        extra = socket.create_connection(address(web), timeout=DEADLINE / 2)
        try:
            answer = extra.recv(4096)
        except TimeoutError:
            answer = b"(nothing: the server waits for its headers)"
        finally:
            extra.close()
        assert answer.startswith(b"HTTP/1.0 503") and b"too many connections" in answer, answer
        assert web.status() is not None  # --status (the socket) answers all along
        t0 = time.monotonic()
        for sock in socks:  # each is closed once the deadline has passed
            sock.settimeout(max(0.1, DEADLINE + 2 - (time.monotonic() - t0)))
            try:
                assert sock.recv(4096) == b""
            except ConnectionResetError:
                pass
    finally:
        for sock in socks:
            sock.close()
    assert call(web, "GET", "/sdapi/v1/progress")[0] == 200


# -- 7: decompression bombs ------------------------------------------------------------------------------


def bomb_png(width: int, height: int) -> bytes:
    """A valid RGBA PNG of WIDTHxHEIGHT transparent pixels in well under a MB: its deflate stream is one
    independent block of 1000 zero rows, repeated (the adler32 of n zero bytes is (n % 65521) << 16 | 1)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row, rows = 1 + width * 4, 1000
    assert height % rows == 0
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = z.compress(bytes(row * rows)) + z.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    stream = b"\x78\xda" + block * (height // rows) + end + struct.pack(">I", ((row * height % 65521) << 16) | 1)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return bomb_png(13000, 13000)


def peak_rss(pid: int) -> int:
    """The peak resident memory of process PID, in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak memory from /proc")
def test_an_uploaded_decompression_bomb_is_refused_before_it_is_decoded(web, bomb):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"http://{web.http}/v1", api_key="unused", max_retries=0, timeout=60)
    # the first job loads the model: the peak memory measured below is the bomb's alone
    assert call(web, "POST", "/v1/images/generations", {"prompt": "castle", "steps": 1})[0] == 200
    before = peak_rss(web.proc.pid)
    with pytest.raises(openai.BadRequestError, match=r"'image' is 13000x13000 pixels, over the limit"):
        client.images.edit(image=("in.png", bomb, "image/png"), prompt="x", model="tiny")
    small = bomb_png(64, 1000)
    with pytest.raises(openai.BadRequestError, match=r"'mask' is 13000x13000 pixels, over the limit"):
        client.images.edit(image=("in.png", small, "image/png"), mask=("m.png", bomb, "image/png"), prompt="x")
    assert peak_rss(web.proc.pid) - before < 100 * 2**20  # decoding it would take 676 MB (RGBA)


@pytest.mark.parametrize("field", ["init_images", "mask"])
def test_a1111_images_are_checked_against_the_pixel_limit(web, bomb, field):
    small = base64.b64encode(bomb_png(64, 1000)).decode()
    body = {"prompt": "x", "steps": 1, "init_images": [small]}
    if field == "init_images":
        body["init_images"] = [base64.b64encode(bomb).decode()]
    else:
        body["mask"] = base64.b64encode(bomb).decode()
    status, answer = call(web, "POST", "/sdapi/v1/img2img", body)
    name = "init_images[0]" if field == "init_images" else "mask"
    assert status == 422 and answer["detail"].startswith(f"'{name}' is 13000x13000 pixels, over the limit"), answer
    assert str(web.out) not in answer["detail"]  # says nothing of the server's folders


# -- 8: images of jobs whose answer is not delivered -----------------------------------------------------


def wait_for(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.parametrize("save_images", [False, True])
def test_an_interrupted_a1111_job_leaves_no_images_unless_asked_to_keep_them(web, save_images):
    import threading

    before = images_in(web.out)
    result = {}
    body = {"prompt": "castle", "steps": 1, "n_iter": 10000, "save_images": save_images}
    thread = threading.Thread(target=lambda: result.update(answer=call(web, "POST", "/sdapi/v1/txt2img", body)))
    thread.start()
    wait_for(lambda: len(images_in(web.out)) >= len(before) + 3, "no image was written")
    assert call(web, "POST", "/sdapi/v1/interrupt", {}) == (200, {})
    thread.join(timeout=60)
    status, answer = result["answer"]
    assert status == 200 and json.loads(answer["info"])["interrupted"] is True
    made = [p for p in images_in(web.out) if p not in before]
    if save_images:
        assert len(made) >= 3  # asked to keep them: they stay, as A1111 keeps them
        for name in made:
            (web.out / name).unlink()
    else:
        assert made == []


def test_a_client_that_hangs_up_leaves_no_images(web):
    before = images_in(web.out)
    body = json.dumps({"prompt": "castle", "steps": 1, "n": 10000}).encode()
    connection = http.client.HTTPConnection(*address(web), timeout=30)
    connection.request("POST", "/v1/images/generations", body=body, headers={"Content-Type": "application/json"})
    wait_for(lambda: len(images_in(web.out)) >= len(before) + 3, "no image was written")
    connection.close()  # gone: its job is cancelled and its images are not delivered
    wait_for(lambda: call(web, "GET", "/sdapi/v1/progress")[1]["state"]["job_count"] == 0, "the job goes on")
    assert images_in(web.out) == before


def test_a_large_answer_arrives_whole(web):
    """The answer is written one image at a time; what arrives is exact JSON of the right length."""
    status, answer = call(
        web,
        "POST",
        "/sdapi/v1/txt2img",
        {"prompt": 'castle "quoted" \u00e9', "steps": 1, "batch_size": 4, "n_iter": 3, "seed": 3},
    )
    assert status == 200 and len(answer["images"]) == 12
    info = json.loads(answer["info"])
    assert info["all_seeds"] == list(range(3, 15)) and len(info["infotexts"]) == 12
    assert answer["parameters"]["prompt"] == 'castle "quoted" \u00e9'
    for b64, seed in zip(answer["images"], info["all_seeds"]):
        data = base64.b64decode(b64, validate=True)
        assert data.startswith(b"\x89PNG") and f"Seed: {seed}".encode() in data
    assert images_in(web.out) == []


# -- 9: deeply nested JSON -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/sdapi/v1/txt2img", "/v1/images/generations"])
@pytest.mark.parametrize("depth", [100_000, 500])
def test_deeply_nested_json_is_a_bad_request(web, path, depth):
    raw = b'{"prompt": "x", "steps": 1, "user": ' + b"[" * depth + b"]" * depth + b"}"
    status, answer = call(web, "POST", path, raw=raw)
    message = answer["error"]["message"] if isinstance(answer.get("error"), dict) else answer["detail"]
    assert status == 400 and "nested" in message, answer


# -- forms of many parts, lengths that are none, the interrupt's body ------------------------------------


def _multipart(parts: list[bytes], boundary: bytes = b"b") -> tuple[bytes, dict]:
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts) + b"--" + boundary + b"--\r\n"
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"}


def _field(name: str, value: bytes) -> bytes:
    return b'Content-Disposition: form-data; name="' + name.encode() + b'"\r\n\r\n' + value


@pytest.mark.parametrize("nested", [False, True])
def test_a_form_of_many_parts_is_refused_before_it_is_parsed(web, nested):
    """20,000 empty parts (1 MB; the parser takes about 10 s for them) are counted first: a 400 at once. Parts
    inside a part (multipart/mixed) count as well."""
    many = [_field("x", b"1")] * 20_000
    if nested:
        inner, _ = _multipart(many, b"c")
        many = [
            b'Content-Disposition: form-data; name="x"\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n' + inner
        ]
    body, headers = _multipart([_field("prompt", b"castle"), *many])
    status, answer = call(web, "POST", "/v1/images/edits", raw=body, headers=headers)
    assert status == 400 and answer["error"]["message"] == "a form of more than 64 parts", answer
    few, headers = _multipart([_field("prompt", b"castle")] * 3)  # under the limit: read, and judged as a form
    status, answer = call(web, "POST", "/v1/images/edits", raw=few, headers=headers)
    assert status == 400 and answer["error"]["message"] == "send the image to edit as a file in 'image'", answer


def test_a_negative_content_length_is_a_bad_request(web):
    with socket.create_connection(address(web), timeout=10) as sock:
        sock.sendall(
            b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: -1\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(4096):  # the server closes the connection after a refused request
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 400 ") or answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"Content-Length -1 is not a length" in answer


def test_an_interrupt_takes_no_body_or_json_and_refuses_forms(web):
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}):
        status, answer = call(web, "POST", "/sdapi/v1/interrupt", raw=b"{}", headers=headers)
        assert status == 415 and answer["error"] == "UnsupportedMediaType", answer
    connection = http.client.HTTPConnection(*address(web), timeout=30)  # as webuiapi sends it: no body at all
    connection.request("POST", "/sdapi/v1/interrupt")
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (200, {})
    connection.close()
    assert call(web, "POST", "/sdapi/v1/interrupt", {}) == (200, {})


@pytest.mark.parametrize("save_images", [False, True])
def test_send_images_false_answers_no_images(web, save_images):
    """A1111's send_images: false: `"images": []`, the seeds still in `info`; the files kept only if saved."""
    before = images_in(web.out)
    body = {"prompt": "castle", "steps": 1, "seed": 5, "send_images": False, "save_images": save_images}
    status, answer = call(web, "POST", "/sdapi/v1/txt2img", body)
    assert status == 200 and answer["images"] == [] and json.loads(answer["info"])["all_seeds"] == [5], answer
    made = [p for p in images_in(web.out) if p not in before]
    assert len(made) == (1 if save_images else 0)
    for name in made:
        (web.out / name).unlink()


def test_errors_on_openai_routes_are_in_openais_shape(web):
    status, answer = call(web, "GET", "/v1/images/generations")
    assert status == 405 and answer["error"]["type"] == "invalid_request_error", answer
    assert "method not allowed" in answer["error"]["message"]
    status, answer = call(web, "GET", "/sdapi/v1/txt2img")  # A1111's routes keep theirs
    assert status == 405 and answer["error"] == "NotFound", answer


def test_requests_writing_and_removing_their_inputs_at_once_never_trip_over_each_other(tmp_path):
    """Each request's inputs go to a folder of its own under .inputs; one request removing its own (and the
    shared .inputs, once empty) never takes away another's. Eight threads, 40 requests each."""
    import io
    import threading

    from PIL import Image

    from diffcli.serve import api

    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, format="PNG")
    errors: list[BaseException] = []

    def requests() -> None:
        for _ in range(40):
            inputs = api.Inputs(str(tmp_path))
            try:
                path = Path(inputs.add_bytes(png.getvalue(), "init_images[0]"))
                assert path.read_bytes() == png.getvalue()
            except BaseException as exc:  # noqa: BLE001 - collected, and the test fails on them
                errors.append(exc)
            finally:
                inputs.remove()

    threads = [threading.Thread(target=requests) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert list(tmp_path.iterdir()) == []  # nothing left: the last one out removed .inputs

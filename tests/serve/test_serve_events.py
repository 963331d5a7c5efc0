"""Live progress over HTTP (docs/events.md, "Over HTTP"): Server-Sent Events of a real `serve --http` on
127.0.0.1, read by a plain SSE client, against the events and pixels of the CLI run by itself."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving import RunningServer, server_env
from test_serve_http import call

PROMPT = "red house at night"
STEPS = 6


class EventStream:
    """A Server-Sent Events client: GET PATH, then each `data:` of the answer parsed as JSON."""

    def __init__(self, address: str, path: str, headers: dict | None = None) -> None:
        host, port = address.rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port), timeout=120)
        self.connection.request("GET", path, headers=headers or {})
        self.response = self.connection.getresponse()  # once here, the server holds the stream open
        self.status = self.response.status

    def events(self, until=lambda event: False):
        """The events until the server ends the stream, or up to the first for which UNTIL is true."""
        data: list[str] = []
        while line := self.response.readline():
            line = line.decode().rstrip("\r\n")
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif not line and data:
                event = json.loads("\n".join(data))
                data = []
                yield event
                if until(event):
                    return

    def close(self) -> None:
        self.connection.close()


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """A server of this module's own: the first job of the first test finds no model loaded, like a command."""
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


def comparable(events: list[dict]) -> list[dict]:
    """EVENTS without what differs between two runs of one job: times, previews, the job id, the folder."""
    out = []
    for event in events:
        if event["event"] == "preview":
            continue
        event = {k: v for k, v in event.items() if k not in ("t", "job_id", "load_s", "total_s")}
        if "path" in event:
            event["path"] = os.path.basename(event["path"])
        out.append(event)
    return out


def gallery_image(web, name: str) -> np.ndarray:
    with urllib.request.urlopen(f"http://{web.http}/v1/gallery/{name}", timeout=60) as response:
        assert response.headers["Content-Type"] == "image/png"
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))


def test_a_served_jobs_events_and_pixels_are_the_clis(web, tmp_path):
    watcher = EventStream(web.http, "/v1/events")  # every job's events, previews included, from now on
    assert watcher.status == 200 and watcher.response.headers["Content-Type"].startswith("text/event-stream")
    body = {"prompt": PROMPT, "steps": STEPS, "seed": 11, "cfg_scale": 5, "sampler_name": "Euler a"}
    status, answer = call(web, "POST", "/v1/jobs", {**body, "override_settings": {"sd_model_checkpoint": "tiny"}})
    assert status == 202, answer
    job = answer["id"]
    assert answer["events"] == f"/v1/events?job={job}"
    own = EventStream(web.http, answer["events"] + "&previews=0")  # this job's, from its start, to its end
    served = list(own.events())
    watched = list(watcher.events(until=lambda e: e["job_id"] == job and e["event"] in ("done", "error")))
    watcher.close()

    cli = subprocess.run(
        [sys.executable, "-m", "diffcli", "txt2img", PROMPT, "--model", "tiny", "--steps", str(STEPS)]
        + ["--seed", "11", "--cfg", "5", "--scheduler", "euler-a", "--no-server", "--json", "-o", f"{tmp_path}/"],
        capture_output=True,
        text=True,
        env=web.env,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    cli_events = [json.loads(line) for line in cli.stderr.splitlines() if line.startswith("{")]
    assert [e["event"] for e in served][:2] == ["start", "phase"] and served[-1]["event"] == "done"
    assert all(e["job_id"] == job for e in served)
    assert comparable(served) == comparable(cli_events)  # names, fields and order
    assert [e for e in watched if e["event"] != "preview"] == served  # the two streams carry the same events

    previews = [e for e in watched if e["event"] == "preview"]
    assert previews, "the watcher asked for previews"
    for preview in previews:
        assert set(preview) == {"event", "t", "image", "step", "steps", "url", "job_id"}
        assert preview["image"] == 1 and 1 <= preview["step"] < STEPS and preview["steps"] == STEPS
        step = next(i for i, e in enumerate(watched) if e["event"] == "step" and e["step"] == preview["step"])
        assert watched[step + 1] is preview  # right after its step
        assert preview["url"].startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(preview["url"].partition(",")[2]))) as image:
            assert image.format == "JPEG" and image.size == (64, 64)
    times = [p["t"] for p in previews]
    assert all(b - a >= 0.24 for a, b in zip(times, times[1:])), times  # at most 4 a second

    # the previews changed nothing: the served image is the CLI's, pixel for pixel
    saved = [e["path"] for e in served if e["event"] == "saved"]
    made = json.loads(cli.stdout.splitlines()[0])["path"]
    with Image.open(made) as image:
        assert np.array_equal(gallery_image(web, saved[0]), np.asarray(image.convert("RGB")))


def test_closing_a_stream_cancels_nothing(web):
    status, answer = call(web, "POST", "/v1/jobs", {"prompt": "castle at dusk", "steps": 40, "seed": 3})
    assert status == 202, answer
    first = EventStream(web.http, answer["events"])
    seen = list(first.events(until=lambda e: e["event"] == "step"))
    first.close()  # gone mid-job: it only watched
    again = list(EventStream(web.http, answer["events"] + "&previews=0").events())
    assert [e["event"] for e in again][0] == "start" and again[-1]["event"] == "done", again[-3:]
    assert comparable(again)[: len(seen)] == comparable([e for e in seen if e["event"] != "preview"])
    assert [e["step"] for e in again if e["event"] == "step"] == list(range(1, 41))
    assert "cancel" not in web.log()


def test_an_a1111_request_is_watched_too(web):
    watcher = EventStream(web.http, "/v1/events?previews=0")
    answers = []
    request = threading.Thread(
        target=lambda: answers.append(call(web, "POST", "/sdapi/v1/txt2img", {"prompt": "snowy ground", "steps": 2}))
    )
    request.start()
    events = list(watcher.events(until=lambda e: e["event"] in ("done", "error")))
    watcher.close()
    request.join(timeout=120)
    assert answers and answers[0][0] == 200, answers
    assert [e["event"] for e in events if e["event"] not in ("phase", "step")] == ["start", "batch", "saved", "done"]
    assert not any(e["event"] == "preview" for e in events)  # previews=0
    assert "/" not in next(e for e in events if e["event"] == "saved")["path"]  # a name, never a server path


def test_a_job_that_fails_ends_its_stream_with_an_error(web):
    status, answer = call(
        web,
        "POST",
        "/v1/jobs",
        {"prompt": "x", "steps": 2, "override_settings": {"sd_model_checkpoint": "nobody/none"}},
    )
    assert status == 202, answer
    events = list(EventStream(web.http, answer["events"]).events())
    assert events[-1]["event"] == "error" and events[-1]["error"] == "UsageError", events
    assert "nobody/none" in events[-1]["detail"]
    assert call(web, "POST", "/v1/jobs", {"prompt": "x", "steps": 0})[0] == 422  # refused before it is queued


def test_stream_requests_that_name_no_job(web):
    for path, status in (("/v1/events?job=999999", 404), ("/v1/events?job=abc", 400), ("/v1/events?job=-1", 400)):
        stream = EventStream(web.http, path)
        assert stream.status == status, path
        stream.close()

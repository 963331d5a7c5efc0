"""`diffcli mcp`: a real server subprocess driven by the MCP SDK's own stdio client (one per module).

Its tools' schemas come from the Job declaration, generate's image equals the CLI's pixel for pixel, its
steps arrive as progress notifications, and a bad argument is a tool error with the CLI's message after
which the server goes on answering. Without the SDK the command is one line and exit code 2."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mcp")

from diffcli import schema  # noqa: E402
from diffcli.jobs import Job  # noqa: E402

from helpers import cli, pixels, subprocess_cli, written  # noqa: E402
from mcp_session import McpServer, images, isolated_env, texts  # noqa: E402

PROMPT = "red house on the left"
SETTINGS = {"model": "tiny", "steps": 2, "seed": 7}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mcphome")


@pytest.fixture(scope="module")
def env(home) -> dict:
    return isolated_env(home)


@pytest.fixture(scope="module")
def out(home) -> Path:
    return home / "mcp-out"


@pytest.fixture(scope="module")
def server(env, out, home):
    running = McpServer(["--out", str(out)], env, home / "mcp.log")
    yield running
    running.close()


@pytest.fixture(scope="module")
def generated(server):
    """generate's result for PROMPT with SETTINGS, and the progress notifications it sent."""
    progress: list = []
    result = server.call("generate", {"prompt": PROMPT, **SETTINGS}, progress=progress)
    assert not result.is_error, (texts(result), server.log())
    return result, progress


def _cli_error(env, *args) -> str:
    p = subprocess_cli(*args, "--no-server", env=env, timeout=120)
    assert p.returncode == 2, p.stderr
    return p.stderr.strip().splitlines()[-1].removeprefix("diffcli: error: ")


def test_the_tools_and_their_schemas_come_from_the_job(server):
    tools = {t.name: t for t in server.list_tools()}
    assert set(tools) == {"generate", "img2img", "edit", "upscale", "info"}
    json_types = {str: "string", int: "integer", float: "number", bool: "boolean"}
    wires = schema.wire_types(Job)
    for name in ("generate", "img2img", "upscale"):
        properties = tools[name].input_schema["properties"]
        assert "task" not in properties and tools[name].input_schema["additionalProperties"] is False
        for field, prop in properties.items():  # every argument is a Job field, typed as it is declared
            kind = wires[field].kind
            expected = ["array", "string"] if kind is schema.STRINGS else json_types[kind]
            assert prop["type"] == expected, (name, field)
    generate, img2img, upscale = (tools[n].input_schema for n in ("generate", "img2img", "upscale"))
    assert generate["required"] == ["prompt"] and img2img["required"] == ["image"]
    assert {"steps", "cfg", "seed", "width", "lora"} <= set(generate["properties"])
    assert not {"image", "strength", "mask", "extend", "scale"} & set(generate["properties"])
    assert set(img2img["properties"]) - set(generate["properties"]) == {"image", "strength"}
    assert {"image", "scale", "method", "fidelity", "tile_size"} <= set(upscale["properties"])
    assert not {"width", "lora", "num_images", "mask"} & set(upscale["properties"])
    assert tools["info"].input_schema["required"] == ["image"]
    edit = tools["edit"].input_schema  # an instruction edit: the fields only that task takes come with it
    assert edit["required"] == ["image", "prompt"]
    assert set(edit["properties"]) - set(generate["properties"]) == {"image", "image_cfg", "references"}
    assert not {"image_cfg", "references"} & (set(generate["properties"]) | set(img2img["properties"]))


def test_generate_returns_the_cli_image_and_its_path(generated, env, out, tmp_path):
    result, _ = generated
    (image,) = images(result)
    (path_text,) = texts(result)
    path = Path(path_text)
    assert path.parent == out and path.is_file()
    assert np.array_equal(image, pixels(path))
    p = subprocess_cli(
        "txt2img", PROMPT, "--model", "tiny", "--steps", "2", "--seed", "7", "-o", tmp_path, "--no-server", env=env
    )
    assert p.returncode == 0, p.stderr
    (cli_path,) = written(p)
    assert np.array_equal(image, pixels(cli_path))  # the same pixels as the CLI's
    assert path.name == Path(cli_path).name  # and the same name


def test_progress_notifications_follow_the_steps(generated):
    _, progress = generated
    assert [(p, t) for p, t, _ in progress] == [(1, 2), (2, 2)], progress
    assert progress[-1][2] == "step 2/2"


def test_bad_arguments_are_tool_errors_with_the_cli_messages(server, env, generated):
    steps = server.call("generate", {"prompt": PROMPT, "steps": "many"})
    assert steps.is_error and texts(steps) == ["generate: 'steps' must be an integer, not a string ('many')"]
    unknown = server.call("generate", {"prompt": PROMPT, "model": "no-such-model-here", "steps": 2})
    assert unknown.is_error
    assert texts(unknown) == [_cli_error(env, "txt2img", PROMPT, "--model", "no-such-model-here", "--steps", "2")]
    zero = server.call("generate", {"prompt": PROMPT, "steps": 0})
    assert zero.is_error and texts(zero) == [_cli_error(env, "txt2img", PROMPT, "--steps", "0")]
    for arguments, message in (
        ({"prompt": PROMPT, "stepz": 2}, "generate: unknown argument 'stepz'"),
        ({"steps": 2}, "generate: missing argument 'prompt'"),
    ):
        r = server.call("generate", arguments)
        assert r.is_error and texts(r) == [message]
    missing = server.call("img2img", {"image": "/nonexistent/in.png", "strength": 0.5})
    assert missing.is_error and "/nonexistent/in.png" in texts(missing)[0]
    # the server goes on answering, and running jobs
    again = server.call("generate", {"prompt": PROMPT, **SETTINGS})
    assert not again.is_error and np.array_equal(images(again)[0], images(generated[0])[0])


def test_info_img2img_and_upscale(server, generated):
    (source,) = texts(generated[0])
    record = server.call("info", {"image": source})
    assert not record.is_error
    job = json.loads(texts(record)[0])["job"]
    assert (job["prompt"], job["seed"], job["steps"]) == (PROMPT, 7, 2)
    edited = server.call("img2img", {"image": source, "strength": 0.5, "steps": 2, "seed": 3})
    assert not edited.is_error, texts(edited)
    (image,) = images(edited)
    edited_job = json.loads(texts(server.call("info", {"image": texts(edited)[0]}))[0])["job"]
    assert edited_job["task"] == "img2img" and edited_job["prompt"] == PROMPT  # the recorded prompt
    bigger = server.call("upscale", {"image": source, "scale": 2, "method": "lanczos"})
    assert not bigger.is_error, texts(bigger)
    (upscaled,) = images(bigger)
    assert upscaled.shape[:2] == (2 * image.shape[0], 2 * image.shape[1])
    nothing = server.call("info", {"image": str(Path(texts(bigger)[0]).parent / "none.png")})
    assert nothing.is_error


async def _cancel_after_first_step(session, arguments: dict) -> None:
    import anyio

    stepping = anyio.Event()

    async def progress(value, total, message):
        stepping.set()

    async with anyio.create_task_group() as group:
        group.start_soon(functools.partial(session.call_tool, "generate", arguments, progress_callback=progress))
        with anyio.fail_after(60):
            await stepping.wait()
        group.cancel_scope.cancel()  # the SDK tells the server (notifications/cancelled)


def test_a_cancelled_call_stops_its_job(server, out, generated):
    before = set(out.iterdir())
    server.portal.call(_cancel_after_first_step, server.session, {"prompt": "castle", "model": "tiny", "steps": 1000})
    started = time.monotonic()
    after = server.call("generate", {"prompt": PROMPT, **SETTINGS})  # waits for nothing but its own job
    assert not after.is_error and time.monotonic() - started < 60
    assert set(out.iterdir()) - before == {Path(texts(after)[0])}  # the cancelled job wrote nothing


def test_without_the_sdk_it_is_one_line_and_exit_2(monkeypatch):
    for name in ("mcp", "mcp.server", "mcp.server.lowlevel"):  # as if it were not installed
        monkeypatch.setitem(sys.modules, name, None)
    r = cli("mcp")
    assert r.exit_code == 2
    (line,) = r.stderr.splitlines()
    assert line.startswith("diffcli: error: diffcli mcp needs the MCP Python SDK") and "diffcli[mcp]" in line


_PROBE = """
import sys
from diffcli.cli.app import main
sys.argv = ["diffcli", *{args!r}]
try:
    main()
except SystemExit:
    pass
sys.stderr.write("LOADED=" + ",".join(m for m in ("torch", "mcp") if m in sys.modules) + "\\n")
"""


@pytest.mark.parametrize("args", [["--help"], ["mcp", "--help"]])
def test_help_imports_neither_torch_nor_the_sdk(args):
    p = subprocess.run([sys.executable, "-c", _PROBE.format(args=args)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr.splitlines()[-1] == "LOADED=", p.stderr
    assert "mcp" in p.stdout

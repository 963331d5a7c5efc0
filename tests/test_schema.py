"""The typed layer: every door's field list and types come from the declarations (Job, RunOptions,
LoadOptions), every door converts through the same function, and the output flags are spelt and decided
in one place."""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

import pytest

from diffcli import schema
from diffcli.errors import UsageError
from diffcli.jobs import Job

PACKAGE = Path(__file__).resolve().parents[1] / "diffcli"


@dataclasses.dataclass(frozen=True)
class Sample:
    name: str = "x"
    count: int | None = None
    scale: float = 1.0
    on: bool = False
    words: tuple[str, ...] | None = None
    mode: str | None = dataclasses.field(default=None, metadata=schema.meta(choices=("a", "b")))
    size: str | None = dataclasses.field(default=None, metadata=schema.meta(also=(int,)))
    secret: str | None = dataclasses.field(default=None, metadata=schema.LOCAL)
    callback: object = None  # no wire type: never on the wire


@dataclasses.dataclass(frozen=True)
class Grown(Sample):
    added: int | None = None


def test_wire_types_come_from_the_annotations_and_the_metadata():
    kinds = schema.wire_types(Sample)
    assert {name: wire.kind for name, wire in kinds.items()} == {
        "name": str,
        "count": int,
        "scale": float,
        "on": bool,
        "words": schema.STRINGS,
        "mode": str,
        "size": str,
    }
    assert kinds["mode"].choices == ("a", "b") and kinds["size"].also == (int,)
    # a field added to the declaration is on the wire with no other edit
    assert schema.wire_types(Grown)["added"] == schema.Wire(int)
    assert schema.checked({"added": 3}, schema.wire_types(Grown)) == {"added": 3}
    with pytest.raises(UsageError, match="'added' must be an integer, not a string"):
        schema.checked({"added": "3"}, schema.wire_types(Grown))


def test_the_one_conversion():
    kinds = schema.wire_types(Sample)
    assert schema.checked({"scale": 2, "words": "w", "size": 32, "count": None}, kinds) == {
        "scale": 2.0,
        "words": ("w",),
        "size": "32",
    }
    assert type(schema.checked({"scale": 2}, kinds)["scale"]) is float
    for name, value, message in [
        ("count", True, "'count' must be an integer, not a boolean"),
        ("scale", "1", "'scale' must be a number, not a string"),
        ("on", 1, "'on' must be true or false, not an integer"),
        ("words", ["a", 1], "'words' must be a list of strings, not a list"),
        ("size", True, "'size' must be a string, not a boolean"),
    ]:
        with pytest.raises(UsageError) as caught:
            schema.checked({name: value}, kinds)
        assert str(caught.value) == message
    with pytest.raises(UsageError, match="^invalid --mode 'c'; use a or b$"):
        schema.checked({"mode": "c"}, kinds)
    assert schema.checked({"secret": "s", "zzz": 1}, kinds) == {}  # not on the wire: left out
    with pytest.raises(UsageError, match="^S: no field 'zzz'$"):
        schema.checked({"zzz": 1}, kinds, unknown="{source}: no field '{name}'", source="S")


def test_every_job_field_is_on_the_wire_with_its_declared_type():
    hints = typing.get_type_hints(Job)
    kinds = schema.wire_types(Job)
    assert list(kinds) == [f.name for f in dataclasses.fields(Job)]
    for name, wire in kinds.items():
        assert hints[name] in (wire.kind | None, wire.kind), name


def test_a_field_added_to_the_job_reaches_every_conversion_and_the_batch_signature():
    @dataclasses.dataclass(frozen=True)
    class NewJob(Job):
        tile: int | None = None
        note: str | None = dataclasses.field(default=None, metadata=schema.PER_JOB)

    assert NewJob.from_dict({"tile": 64, "prompt": "x"}).tile == 64
    with pytest.raises(UsageError, match=r"^L:1: 'tile' must be an integer, not a string \('64'\)$"):
        NewJob.from_dict({"tile": "64"}, source="L:1")
    shared = schema.names(NewJob, lacking="per_job")
    assert "tile" in shared and "note" not in shared


def test_the_batch_signature_is_the_jobs_fields_less_those_declared_per_job():
    from diffcli.run import SHARED_BY_A_BATCH

    # the list as it was written out by hand, before it was derived
    assert [n for n in SHARED_BY_A_BATCH if n in _FIELDS_THEN] == [
        "task",
        "model",
        "base",
        "quantize",
        "steps",
        "cfg",
        "cfg_cutoff",
        "shift",
        "width",
        "height",
        "scheduler",
        "device",
        "dtype",
        "lora",
        "prompt_syntax",
        "control",
        "control_preprocess",
        "cache",
        "vae_decoder",
    ]
    later = [f for f in dataclasses.fields(Job) if f.name not in _FIELDS_THEN]  # shared unless declared per job
    assert all((f.name in SHARED_BY_A_BATCH) != bool(f.metadata.get("per_job")) for f in later)


# the Job's fields when SHARED_BY_A_BATCH was derived from them
_FIELDS_THEN = {
    "task",
    "prompt",
    "negative",
    "model",
    "base",
    "quantize",
    "steps",
    "cfg",
    "cfg_cutoff",
    "shift",
    "width",
    "height",
    "seed",
    "num_images",
    "batch_size",
    "scheduler",
    "device",
    "dtype",
    "strength",
    "image",
    "mask",
    "mask_blur",
    "extend",
    "anchor",
    "fill",
    "inpaint_model",
    "lora",
    "prompt_syntax",
    "control",
    "control_preprocess",
    "cache",
    "vae_decoder",
}


def test_a_request_may_set_the_declared_options_and_nothing_of_the_servers():
    from diffcli.flags import build_options, option_types, wire_options
    from diffcli.pipelines import LoadOptions
    from diffcli.run import RunOptions

    types = {name: wire.kind for name, wire in option_types().items()}
    assert (
        types.items()
        >= {
            "out": str,
            "fmt": str,
            "overwrite": bool,
            "json": bool,
            "save_partial": bool,
            "offline": bool,
            "max_pixels": int,
            "replay_model": str,
            "allow_pickle": bool,
            "offload": str,
            "vae_tiling": bool,
            "attention_slicing": bool,
        }.items()
    )
    # the server's own, never a request's: local ones, and what has no wire type
    assert not types.keys() & {"from_record", "names_only", "a1111_sampler", "batch_key", "results", "load"}
    assert not types.keys() & {"quantize", "compile"}
    assert not set(schema.names(RunOptions)) & set(schema.names(LoadOptions))  # one flat namespace
    opts = RunOptions(out="/o/", json=True, batch_key="k", load=LoadOptions(offload="model", compile=True))
    wire = wire_options(opts)
    assert set(wire) == set(types) and wire["offload"] == "model"
    assert build_options(wire) == RunOptions(out="/o/", json=True, load=LoadOptions(offload="model"))


def _spy(monkeypatch) -> list[str]:
    """Record the field of every schema.convert call."""
    seen: list[str] = []
    real = schema.convert

    def convert(name, value, kind, **kwargs):
        seen.append(name)
        return real(name, value, kind, **kwargs)

    monkeypatch.setattr(schema, "convert", convert)
    return seen


def _message(call) -> str:
    with pytest.raises(Exception) as caught:
        call()
    return str(caught.value)


def test_every_door_converts_a_job_field_through_the_one_function(monkeypatch, tmp_path):
    from diffcli.batch import read_lines
    from diffcli.serve import api
    from diffcli.serve.worker import parse_request

    seen = _spy(monkeypatch)
    lines = tmp_path / "jobs.jsonl"
    lines.write_text('{"prompt": "x", "steps": "3"}\n')
    doors = {
        "batch line": lambda: read_lines(str(lines), Job(), False, print),
        "recorded job": lambda: Job.from_dict({"steps": "3"}, source="x.png: recorded job"),
        "socket": lambda: parse_request({"job": {"prompt": "x", "steps": "3"}, "opts": {"out": "/o/"}}),
        "A1111": lambda: api.a1111_job({"prompt": "x", "steps": "3"}, "txt2img", None),
        "OpenAI": lambda: api.openai_job({"prompt": "x", "steps": "3"}),
    }
    messages = {}
    for door, call in doors.items():
        seen.clear()
        messages[door] = _message(call)
        assert "steps" in seen, door
    # each door keeps its own words
    assert messages == {
        "batch line": f"{lines}:1: 'steps' must be an integer, not a string ('3')",
        "recorded job": "x.png: recorded job: 'steps' must be an integer, not a string ('3')",
        "socket": "the request: 'steps' must be an integer, not a string ('3')",
        "A1111": "'steps' must be an integer, not a string",
        "OpenAI": "'steps' must be an integer, not a string",
    }


def test_every_door_checks_the_options_through_the_one_function(monkeypatch):
    from diffcli.flags import option_values
    from diffcli.serve.worker import parse_request

    seen = _spy(monkeypatch)
    assert _message(lambda: parse_request({"job": {"prompt": "x"}, "opts": {"out": "/o/", "json": "yes"}})) == (
        "the request: option 'json' must be a bool"
    )
    assert "json" in seen
    bad = "invalid --offload 'disk'; use model or sequential"
    assert _message(lambda: parse_request({"job": {"prompt": "x"}, "opts": {"out": "/o/", "offload": "disk"}})) == bad
    assert _message(lambda: option_values({"offload": "disk"})) == bad  # the command's flags


def _option_types(annotation):
    """The type a Typer parameter annotation declares, Annotated and Optional taken off."""
    base = typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation
    args = [a for a in typing.get_args(base) if a is not type(None)]
    return args[0] if typing.get_origin(base) is typing.Union and len(args) == 1 else base


def test_the_generation_flags_take_the_declared_types():
    from diffcli.cli.generate import COMMANDS
    from diffcli.cli.options import SHARED_GENERATION
    from diffcli.flags import option_types

    job = schema.wire_types(Job)
    options = option_types()
    params = [*SHARED_GENERATION, *(p for _, extra in COMMANDS.values() for p in extra)]
    checked = set()
    for param in params:
        field = {"format": "fmt"}.get(param.name, param.name)
        wire = job.get(field) or options.get(field)
        if wire is None:
            continue
        kind = list[str] if wire.kind is schema.STRINGS else wire.kind
        assert _option_types(param.annotation) == kind, param.name
        checked.add(field)
    assert checked >= _FIELDS_THEN - {"task"}  # (fields added since may be another command's, e.g. upscale's)
    assert checked >= set(options) - {"replay_model"}


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_the_output_flags_are_spelt_once_and_taken_by_every_reporting_command():
    import typer.main

    from diffcli.cli.app import app
    from diffcli.cli.output_flags import OUTPUT_FLAGS

    spellings = {opt: name for name, opts in OUTPUT_FLAGS.items() for opt in opts}
    takes = {}
    for path, command in _commands(typer.main.get_command(app)):
        for param in command.params:
            names = set(param.opts) & spellings.keys()
            if names:
                (name,) = {spellings[n] for n in names}
                assert tuple(param.opts) == OUTPUT_FLAGS[name] and param.is_flag, (path, param.opts)
                takes.setdefault(path, set()).add(name)
    reporting = [("txt2img",), ("img2img",), ("inpaint",), ("outpaint",), ("batch",), ("upscale",), ("distill",)]
    for path in reporting:
        assert takes.get(path) == {"json", "quiet", "debug"}, path
    # no command module writes the flags out itself
    for file in (PACKAGE / "cli").glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Option":
                literals = {a.value for a in node.args if isinstance(a, ast.Constant)}
                assert not literals & spellings.keys() or file.name == "output_flags.py", (file.name, node.lineno)


def test_one_function_decides_the_reporter(monkeypatch):
    from diffcli import progress
    from diffcli.distill.events import make_events

    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True, raising=False)
    assert isinstance(progress.make_reporter(True, True), progress.QuietReporter)
    assert isinstance(progress.make_reporter(True, False), progress.JsonReporter)
    assert isinstance(progress.make_reporter(False, False), progress.RichReporter)
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(progress.make_reporter(False, False), progress.JsonReporter)
    calls = []
    real = progress.make_reporter
    monkeypatch.setattr(progress, "make_reporter", lambda *a, **k: calls.append(a) or real(*a, **k))
    make_events(True, False, main_process=False)  # distill's training events ask it too
    assert calls == [(True, True)]

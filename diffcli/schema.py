"""The typed layer: what each field of a declared dataclass (Job, RunOptions, LoadOptions, ...) takes at a
front door, and the one conversion every door runs its values through.

A field's wire type is derived from its annotation: str, int, float or bool, or a tuple of strings (a
list on the wire; one string is a list of one), each optionally `| None`; a field of any other type
(a callable, a nested dataclass) is not on the wire. Where a field needs more, its metadata (meta())
says so: `local` (never taken from a request: the server's or the command's own), `also` (other JSON
types a request may give, converted: Job.extend takes an integer), `choices` (the only values allowed:
LoadOptions.offload) and `per_job` (a Job field the jobs denoised in one batch may differ in).

A leaf: the standard library and diffcli.errors only, so a door checks its input before torch loads.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable

from diffcli.errors import UsageError

STRINGS = tuple[str, ...]  # a list of strings on the wire (one string: a list of one)
_PLAIN = (str, int, float, bool)

# what a value is, as a message names it
_KINDS = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
}
# what a field wants, as a message names it
_WANTS = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "an object",
    STRINGS: "a list of strings",
}

# the message of a value of the wrong type; a door may give its own (says=), with these fields: name,
# want ("an integer"), got ("a string"), shown (the value's repr, cut at 40 characters), a_type ("an int",
# "a str": the type's Python name) and whatever the door passes along (source, what)
PLAIN = "'{name}' must be {want}, not {got}"


def meta(*, local: bool = False, also: tuple = (), choices: tuple = (), per_job: bool = False) -> dict:
    """A field's metadata for this layer (dataclasses.field(metadata=meta(...))); see the module's doc."""
    return types.MappingProxyType({"local": local, "also": tuple(also), "choices": tuple(choices), "per_job": per_job})


LOCAL = meta(local=True)
PER_JOB = meta(per_job=True)


@dataclasses.dataclass(frozen=True)
class Wire:
    """What one field takes at a door."""

    kind: object  # str, int, float, bool, list, dict or STRINGS
    also: tuple = ()  # other types a door may give for it, converted to KIND (not bool)
    choices: tuple = ()  # the only values it may have (None aside)


def _kind(annotation) -> object | None:
    """The wire type of ANNOTATION (`X | None` as X), or None where it has none."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            return None
        annotation = args[0]
    if annotation in _PLAIN:
        return annotation
    if typing.get_origin(annotation) in (tuple, list) and typing.get_args(annotation) in ((str, ...), (str,)):
        return STRINGS
    return None


@functools.cache
def wire_types(cls) -> dict[str, Wire]:
    """The fields of dataclass CLS a door may give, in declaration order, with what each takes."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        kind = _kind(hints[f.name])
        if kind is None or f.metadata.get("local"):
            continue
        out[f.name] = Wire(kind, tuple(f.metadata.get("also", ())), tuple(f.metadata.get("choices", ())))
    return out


def names(cls, lacking: str | None = None) -> tuple[str, ...]:
    """The field names of dataclass CLS in declaration order; LACKING: only those whose metadata does not
    set that key (e.g. "per_job")."""
    return tuple(f.name for f in dataclasses.fields(cls) if not (lacking and f.metadata.get(lacking)))


def kind_of(value) -> str:
    """What VALUE is, as a message says it: "an integer", "a list", "null", ..."""
    return _KINDS.get(type(value), type(value).__name__)


def _wants(kind) -> str:
    return _WANTS.get(kind, f"a {getattr(kind, '__name__', kind)}")


def _a_type(kind) -> str:
    name = getattr(kind, "__name__", str(kind))
    return ("an " if name[:1] in "aeiou" else "a ") + name


def _as(value, wire: Wire) -> tuple[bool, object]:
    """(whether VALUE fits WIRE, VALUE converted to it)."""
    kind, number = wire.kind, isinstance(value, (int, float)) and not isinstance(value, bool)
    if any(isinstance(value, t) and not isinstance(value, bool) for t in wire.also) and not isinstance(value, kind):
        return True, kind(value)  # {"extend": 32}: "32"
    if kind is float:
        return number, float(value) if number else value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is STRINGS:
        value = [value] if isinstance(value, str) else value
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return ok, tuple(value) if ok else value
    return isinstance(value, kind), value


def convert(name: str, value, kind, *, says: str = PLAIN, error: Callable = UsageError, **context):
    """VALUE, given for field NAME, as the type KIND (a Wire, or a type: str, int, float, bool, list, dict
    or STRINGS) takes it: an integer where a number is meant is made a float, one string where a list of
    strings is meant a tuple of one. A value that does not fit raises ERROR(SAYS formatted, see PLAIN)."""
    wire = kind if isinstance(kind, Wire) else Wire(kind)
    ok, value = _as(value, wire)
    if not ok:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        text = says.format(
            name=name, want=_wants(wire.kind), got=kind_of(value), shown=shown, a_type=_a_type(wire.kind), **context
        )
        raise error(text)
    return value


def check_choices(name: str, value, kind) -> None:
    """VALUE must be one of field NAME's choices (where it has some): the message names its flag."""
    choices = kind.choices if isinstance(kind, Wire) else ()
    if choices and value is not None and value not in choices:
        allowed = " or ".join([", ".join(choices[:-1]), choices[-1]] if len(choices) > 1 else choices)
        raise UsageError(f"invalid --{name.replace('_', '-')} '{value}'; use {allowed}")


def checked(
    data: dict, kinds: dict, *, says: str = PLAIN, unknown: str | None = None, error: Callable = UsageError, **context
) -> dict:
    """The values of DATA converted (convert) to the KINDS of their names, None values left out; then each
    one's choices checked. A name KINDS lacks raises ERROR(UNKNOWN formatted with its name and CONTEXT), or
    is left out where UNKNOWN is None."""
    values = {}
    for name, value in data.items():
        kind = kinds.get(name)
        if kind is None:
            if unknown is not None:
                raise error(unknown.format(name=name, **context))
            continue
        if value is not None:
            values[name] = convert(name, value, kind, says=says, error=error, **context)
    for name, value in values.items():
        check_choices(name, value, kinds[name])
    return values

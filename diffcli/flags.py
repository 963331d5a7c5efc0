"""RunOptions (with their LoadOptions), built in one place for every door: from the shared generation flags
(a dict keyed by the CLI's parameter names: the generation commands, `diffcli batch`, the ranks
`diffcli.launch` starts), from a socket request's `opts` (serve.worker) and for an HTTP request (serve.http).
What a door may give, and its type, comes from the two dataclasses' declarations (diffcli.schema)."""

from __future__ import annotations

from diffcli import schema
from diffcli.jobs import Job

# the flags whose parameter name is not their option's field name
_PARAMETERS = {"fmt": "format"}


def option_types() -> dict:
    """What a door may set of RunOptions and LoadOptions, one flat dict: field -> schema.Wire."""
    from diffcli.pipelines import LoadOptions
    from diffcli.run import RunOptions

    return {**schema.wire_types(RunOptions), **schema.wire_types(LoadOptions)}


def build_options(values: dict):
    """RunOptions, their LoadOptions nested, from flat VALUES keyed by the two dataclasses' field names
    (already converted and checked by the door, schema.checked)."""
    from diffcli.pipelines import LoadOptions
    from diffcli.run import RunOptions

    load = {k: v for k, v in values.items() if k in schema.names(LoadOptions)}
    return RunOptions(**{k: v for k, v in values.items() if k not in load}, load=LoadOptions(**load))


def wire_options(opts) -> dict:
    """The RunOptions OPTS as a request to a server carries them (serve.worker.parse_request reads them)."""
    out = {k: getattr(opts, k) for k in schema.wire_types(type(opts))}
    out.update({k: getattr(opts.load, k) for k in schema.wire_types(type(opts.load))})
    return out


def option_values(params: dict) -> dict:
    """The options the shared flags give, converted and checked (an --offload of the choices); the command
    line is checked before anything else reads it."""
    types = option_types()
    return schema.checked({name: params.get(_PARAMETERS.get(name, name)) for name in types}, types)


def run_options(params: dict, job: Job):
    """The RunOptions the shared generation flags describe (txt2img, img2img, inpaint, batch)."""
    values = option_values(params)
    values.update(
        replay_model=job.model if params.get("from_image") and not params.get("model") else None,
        from_record=_from_record(params, job),
        compile=params.get("compile", False),
    )
    return build_options(values)


# the components a job loads besides its model: named only inside a --from image, they are never fetched
_COMPONENTS = ("vae_decoder", "control", "base")


def _from_record(params: dict, job: Job) -> frozenset[str]:
    """The components of JOB that only its --from image names (no flag does), for RunOptions.from_record; and
    "scheduler" where the image's sampler is replayed on another model (--model given), which it may not fit."""
    if not params.get("from_image"):
        return frozenset()
    named = {name for name in _COMPONENTS if not params.get(name) and getattr(job, name) not in (None, "full")}
    if params.get("model") and not params.get("scheduler") and job.scheduler is not None:
        named.add("scheduler")
    return frozenset(named)

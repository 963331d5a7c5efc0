"""The shared generation flags (a dict keyed by the CLI's parameter names) as RunOptions: one conversion for
every door that takes them (the generation commands, `diffcli batch`, and the ranks `diffcli.launch` starts)."""

from __future__ import annotations

from diffcli.errors import UsageError
from diffcli.jobs import Job


def run_options(params: dict, job: Job):
    """The RunOptions the shared generation flags describe (txt2img, img2img, inpaint, batch)."""
    from diffcli.pipelines import LoadOptions
    from diffcli.run import RunOptions

    if params.get("offload") not in (None, "model", "sequential"):
        raise UsageError(f"invalid --offload '{params['offload']}'; use model or sequential")
    return RunOptions(
        out=params["out"],
        fmt=params["format"],
        overwrite=params["overwrite"],
        json=params["json"],
        save_partial=params.get("save_partial", False),
        offline=params["offline"],
        max_pixels=params.get("max_pixels"),
        replay_model=job.model if params.get("from_image") and not params.get("model") else None,
        from_record=_from_record(params, job),
        load=LoadOptions(
            allow_pickle=params["allow_pickle"],
            offload=params["offload"],
            vae_tiling=params["vae_tiling"],
            attention_slicing=params["attention_slicing"],
            compile=params.get("compile", False),
        ),
    )


# the components a job loads besides its model: named only inside a --from image, they are never fetched
_COMPONENTS = ("vae_decoder", "control", "base")


def _from_record(params: dict, job: Job) -> frozenset[str]:
    """The components of JOB that only its --from image names (no flag does), for RunOptions.from_record."""
    if not params.get("from_image"):
        return frozenset()
    return frozenset(name for name in _COMPONENTS if not params.get(name) and getattr(job, name) not in (None, "full"))

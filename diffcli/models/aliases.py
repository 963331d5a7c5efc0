"""Model aliases: short names for well-known hub repos, with recommended settings. Each family declares
its own (diffcli/families/); this module is where models/ looks them up.

The generation commands use `defaults` when the user gives no --steps/--cfg/--scheduler.
Scheduler names are diffcli's (see docs/models.md): ddim, ddpm, pndm, lms, euler, euler-a, heun,
dpm++2m, dpm++2m-karras, dpm++2m-sde-karras, unipc, deis, lcm.
"""

from __future__ import annotations

from diffcli import families

SCHEDULERS = (
    "ddim",
    "ddpm",
    "pndm",
    "lms",
    "euler",
    "euler-a",
    "heun",
    "dpm++2m",
    "dpm++2m-karras",
    "dpm++2m-sde-karras",
    "unipc",
    "deis",
    "lcm",
    "flow-euler",
)


def __getattr__(name: str):
    """ALIASES: every family's aliases (diffcli.families), read when first asked for."""
    if name == "ALIASES":
        return families.aliases()
    raise AttributeError(name)


def alias_names() -> str:
    return ", ".join(families.aliases())


def alias_for_repo(repo_id: str) -> str | None:
    for name, alias in families.aliases().items():
        if alias.repo_id == repo_id:
            return name
    return None

"""Latent Consistency Models: any UNet family's model distilled to sample in a few steps with the LCM
scheduler (diffcli's own distill students included). A variant: its settings, the family's everything else."""

from __future__ import annotations

from diffcli.families.spec import Configs, Family


def matches(c: Configs) -> bool:
    return c.scheduler.get("_class_name") == "LCMScheduler"


FAMILIES = (
    Family(
        name="lcm",
        label="Latent Consistency Model",
        order=0,  # asked before the family's other variants
        variant_of="*",
        matches=matches,
        defaults={"steps": 4, "cfg": 1.0, "scheduler": "lcm"},
    ),
)

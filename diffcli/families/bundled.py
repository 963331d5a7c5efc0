"""diffcli's bundled tiny models (diffcli/bundled/): SD-1-style UNets trained on generated scenes,
named by their diffcli.json ("family": "bundled", or "bundled-edit" for the InstructPix2Pix model `tiny-edit`).
Their own diffcli.json carries their settings."""

from __future__ import annotations

from diffcli.families.sd1 import DEFAULTS, IP2P, IP2P_PIPELINE, PIPELINES, UNET_OPTIONS
from diffcli.families.spec import Family

FAMILIES = (
    Family(
        name="bundled",
        label="diffcli bundled model",
        order=90,
        # under each model's own diffcli.json; the hires fix redraws least at 0.2: trained at 64x64 only, the
        # model repeats objects at 128 the more it redraws (measured: docs/benchmarks.md, bench/hires_quality.py)
        defaults={**DEFAULTS, "hires_strength": 0.2},
        pipelines=PIPELINES,
        sampler_rule=False,
        options=UNET_OPTIONS,
        controlnets={"seg": "tiny-control-seg"},  # shipped beside it (diffcli/bundled/)
        upscale_strength=0.1,  # measured (docs/upscale.md): 0.3 loses PSNR on every pair tried
    ),
    # `tiny-edit` (recipe diffcli.training.edit): the bundled model's InstructPix2Pix variant, edits only
    Family(
        name="bundled-edit",
        label="diffcli bundled editing model (InstructPix2Pix)",
        order=91,
        defaults=IP2P.defaults,  # under its own diffcli.json
        pipelines={"edit": IP2P_PIPELINE},
        one_task={IP2P_PIPELINE: "edit"},
        sampler_rule=False,
        options=IP2P.options,
    ),
)

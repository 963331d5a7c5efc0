"""diffcli's bundled tiny models (diffcli/bundled/), trained on generated scenes and named by their diffcli.json:
SD-1-style UNets ("family": "bundled", or "bundled-edit" for the InstructPix2Pix model `tiny-edit`) and a
FLUX.1-architecture transformer ("bundled-flux", `tiny-flux`). Their own diffcli.json carries their settings."""

from __future__ import annotations

from dataclasses import replace

from diffcli.families.flux import FLUX
from diffcli.families.qwen_image import TRUE_CFG
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
        options=IP2P.options,
    ),
    # `tiny-flux` (recipe diffcli.training.flux): FLUX.1's transformer, pipelines, packing and caches, trained
    # without a guidance embedding and with empty captions, so --cfg is true classifier-free guidance (FluxPipeline's
    # true_cfg_scale, taken when there is a negative prompt: the default is " "); its T5 reads 32 tokens
    replace(
        FLUX,
        name="bundled-flux",
        label="diffcli bundled flow-matching transformer (FLUX.1 architecture)",
        order=92,
        detect=None,
        detect_keys=None,
        # under its diffcli.json; trained at 64x64 only, it redraws least at hires strength 0.2, as `tiny` does
        # (bench/hires_quality.py --model tiny-flux: adherence 0.875 at 0.2, 0.325 at A1111's 0.7)
        defaults={"steps": 20, "cfg": 4.0, "negative": " ", "scheduler": "flow-euler", "hires_strength": 0.2},
        one_task={},
        guidance="cfg",
        cfg_argument="true_cfg_scale",
        cfg_meaning=TRUE_CFG,
        options=frozenset({"negative", "lora", "quantize", "fbc", "taylorseer", "magcache"}),
        tiny_decoder=None,
        single_file=None,
        base_examples=None,
        # each cache's parameter when --cache names none: the largest setting tried within the bars (adherence >=
        # 0.97x, FD <= 1.15x, loop speed-up >= 1.5x), bench/cache_quality.py --model tiny-flux (docs/speed.md)
        cache_params={"fbc": 0.2, "taylorseer": 4, "magcache": 0.2},
        call_kwargs={"max_sequence_length": 32},
        # MagCache's magnitude ratios for its 20 default steps (FLUX.1's do not fit it), as calibrated by
        # `python bench/mag_ratios.py --n 16` (diffusers' calibration mode, 16 held-out prompts, both CFG passes)
        mag_ratios=(
            1.0,
            0.96812,
            0.96008,
            0.97302,
            0.98313,
            0.97682,
            0.98037,
            0.98075,
            0.97954,
            0.97384,
            0.97286,
            0.96601,
            0.96737,
            0.9674,
            0.95526,
            0.95281,
            0.94488,
            0.9357,
            0.92357,
            0.91371,
        ),
        aliases={},
    ),
)

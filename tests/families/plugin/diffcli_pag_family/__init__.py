"""A diffcli family plugin (the test of the `diffcli.families` entry-point group): Stable Diffusion 1.x
models saved with diffusers' perturbed-attention-guidance pipeline (StableDiffusionPAGPipeline).

It uses only diffcli's public family API (diffcli.families.Family and Configs), as any other package would."""

from diffcli.families import Configs, Family


def detect(c: Configs) -> bool:
    return c.pipeline_class.startswith("StableDiffusionPAG")


FAMILIES = (
    Family(
        name="sd1-pag",
        label="Stable Diffusion 1.x with perturbed-attention guidance",
        detect=detect,  # order 0: asked before every built-in family
        defaults={"steps": 3, "cfg": 2.5, "scheduler": "euler"},
        pipelines={
            "txt2img": "StableDiffusionPAGPipeline",
            "img2img": "StableDiffusionPAGImg2ImgPipeline",
            "inpaint": "StableDiffusionPAGInpaintPipeline",
        },
        options=frozenset({"negative", "cfg-cutoff", "lora"}),
        aliases={},
    ),
)

"""diffcli.fit and `diffcli device`: which well-known models fit in a device's memory."""

import json

from diffcli.fit import verdicts, weights_gib

from helpers import cli


def test_quantizing_the_denoiser_shrinks_flux_and_offload_helps_only_on_cuda():
    full, largest = weights_gib("flux-dev / flux-schnell", "bfloat16")
    q4, _ = weights_gib("flux-dev / flux-schnell", "bfloat16", "gguf-q4_k")
    assert 30 < full < 35 and largest < full and q4 < full / 2
    rows = {(r["model"], r["weights"]): r["verdict"] for r in verdicts(32, "bfloat16", can_offload=True)}
    assert rows[("flux-dev / flux-schnell", "bfloat16")] == "fits with --offload model"
    assert rows[("flux-dev / flux-schnell", "gguf-q4_k")] == "fits"
    rows = {(r["model"], r["weights"]): r["verdict"] for r in verdicts(32, "bfloat16", can_offload=False)}
    assert rows[("flux-dev / flux-schnell", "bfloat16")] == "does not fit"


def test_device_reports_memory_and_what_fits():
    facts = json.loads(cli("device", "--json", "--device", "cpu").stdout)
    assert facts["memory_gib"] > 0 and facts["memory_of"] == "system memory"
    assert {r["family"] for r in facts["fits"]} >= {"sd3", "flux", "flux-kontext", "chroma", "z-image", "qwen-image"}
    assert all(r["verdict"] != "fits with --offload model" for r in facts["fits"])  # no offload on CPU


def test_every_row_is_a_known_family_and_the_2026_ones_weigh_what_they_publish():
    from diffcli import families
    from diffcli.fit import MODELS

    assert all(families.get(family) is not None for family, *_ in MODELS.values())
    qwen, _ = weights_gib("qwen-image", "bfloat16")
    assert 50 < qwen < 60 and weights_gib("qwen-image", "bfloat16", "gguf-q4_k")[0] < qwen / 1.5

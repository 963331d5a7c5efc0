"""OpenVINO vs torch for the SD-1.5 UNet on this CPU: per guided step, same process, same dtype class.

Issue 20 asks for `--backend openvino` only if the OpenVINO runtime beats diffcli's torch default by
at least 1.3x per step at equal dtype class; this measures exactly that. The UNet is the random-
weight SD-1.5 one bench/real_size.py builds (run that first, or pass --model). It is converted with
`openvino.convert_model` (the runtime directly, no optimum-intel), compiled for the CPU with the
f32 inference-precision hint (and, with --bf16, a second time with the bf16 hint against torch
bfloat16), and timed against torch eager on the same inputs, alternating A B A B. The relative L2
difference of the noise predictions says whether both compute the same thing.
Needs `pip install openvino` (not a diffcli dependency).

    python bench/openvino_unet.py [--model /tmp/diffcli-real-size/sd15] [--repeats 3] [--bf16]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch


class _Plain(torch.nn.Module):
    """The UNet with positional tensors in and one tensor out, as convert_model traces it."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, text):
        return self.unet(sample, timestep, text, return_dict=False)[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--model", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "diffcli-real-size" / "sd15"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="also compare bfloat16 (torch) with OpenVINO's bf16 hint")
    args = parser.parse_args()

    import openvino as ov
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet", torch_dtype=torch.float32).eval()
    torch.manual_seed(0)
    inputs = (torch.randn(2, 4, 64, 64), torch.tensor([500, 500]), torch.randn(2, 77, 768))
    model = _Plain(unet)
    t0 = time.perf_counter()
    with torch.no_grad():
        converted = ov.convert_model(model, example_input=inputs)
    convert_s = time.perf_counter() - t0
    core = ov.Core()
    print(
        f"openvino {ov.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"convert {convert_s:.1f} s"
    )
    cases = [("float32", torch.float32, "f32")] + ([("bfloat16", torch.bfloat16, "bf16")] if args.bf16 else [])
    for label, dtype, hint in cases:
        t0 = time.perf_counter()
        compiled = core.compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": hint})
        compile_s = time.perf_counter() - t0
        model.to(dtype)
        typed = (inputs[0].to(dtype), inputs[1], inputs[2].to(dtype))
        numpy_inputs = [x.numpy() for x in inputs]

        def run_torch():
            with torch.inference_mode():
                return model(*typed).float()

        def run_openvino():
            return torch.from_numpy(compiled(numpy_inputs)[0])

        reference, ours = run_torch(), run_openvino()  # warm-up; also the outputs compared
        times = {"torch": [], "openvino": []}
        for _ in range(args.repeats):
            for name, fn in (("torch", run_torch), ("openvino", run_openvino)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        best = {name: min(values) for name, values in times.items()}
        rel = ((reference - ours).norm() / reference.norm()).item()
        print(
            f"{label}: compile {compile_s:.1f} s; per guided step (batch 2, 64x64 latent, best of {args.repeats}): "
            f"torch {best['torch']:.2f} s, openvino {best['openvino']:.2f} s, speed-up "
            f"x{best['torch'] / best['openvino']:.2f}; "
            f"all times torch {[round(x, 2) for x in times['torch']]} openvino "
            f"{[round(x, 2) for x in times['openvino']]}; "
            f"relative L2 difference {rel:.2e}",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""One guided UNet step at real size, by execution mode: eager, fused QKV, compiled (plain or frozen), int8.

`diffcli batch/serve --compile` compiles the denoiser with `Module.compile()` (pipelines.compile_module),
frozen where device.compile_freezing says (pipelines.compiled_call); `--quantize int8` loads it with
torchao's int8 weight-only config (diffcli.quantize); bench/compile.py measures --compile end to end on
the bundled model. This measures one guided UNet step of the real-size SD-1.5 architecture (the
random-weight model bench/real_size.py builds) on this machine, in one process, in --dtype (float32:
diffcli's CPU default on CPUs without native bfloat16; bfloat16 where they have it):
  eager         as loaded
  fused-qkv     eager with diffusers' `fuse_qkv_projections()` (one matmul for q, k and v)
  compiled      `Module.compile()` without freezing (--compile where it does not freeze)
  frozen        compile_module + compiled_call with freezing (--compile on a CPU with native bfloat16)
  int8          torchao int8 weight-only, as `--quantize int8` (weights int8, matmuls in --dtype)
  int8-dynamic  torchao int8 dynamic activations and int8 weights (int8 matmuls: VNNI / AMX-INT8)
The compile cost is printed with each first call. Modes are timed alternately (A B C A B C ...), so a
drifting machine load hits all alike; printed per mode: each call, the best and the median, their ratios
to eager, and the largest difference of the noise prediction from eager's (relative L2). The CPU's model
and bfloat16/AMX flags head the output (docs/benchmarks.md keeps a table per CPU kind).

    python bench/unet_step.py [--model /tmp/diffcli-real-size/sd15] [--repeats 5] [--latent 64]
        [--dtype float32|bfloat16] [--modes eager,frozen,compiled]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from real_size import cpu_kind

from diffcli.pipelines import compile_module, compiled_call


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--model", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "diffcli-real-size" / "sd15"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latent", type=int, default=64, help="latent side (64: a 512x512 image)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    # frozen before compiled: dynamo keeps its compiled entries on Module._call_impl's code, shared by every
    # module; an entry traced without freezing guards no parameter's identity, so a frozen module of the same
    # architecture traced after it would run it (unfrozen), while a frozen entry guards its own parameters
    parser.add_argument(
        "--modes", default="eager,frozen,compiled", help="of eager,fused-qkv,compiled,frozen,int8,int8-dynamic"
    )
    args = parser.parse_args()
    from diffusers import UNet2DConditionModel

    dtype = getattr(torch, args.dtype)
    eager = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet", torch_dtype=dtype).eval()
    modes = {"eager": eager}
    for name in args.modes.split(","):
        if name in modes:
            continue
        model = copy.deepcopy(eager)
        if name == "fused-qkv":
            model.fuse_qkv_projections()
        elif name == "compiled":
            model.compile()
        elif name == "frozen":
            compile_module(model, freeze=True)
        elif name in ("int8", "int8-dynamic"):
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

            quantize_(model, Int8WeightOnlyConfig() if name == "int8" else Int8DynamicActivationInt8WeightConfig())
        else:
            parser.error(f"unknown mode {name}")
        modes[name] = model
    torch.manual_seed(0)
    inputs = (
        torch.randn(2, 4, args.latent, args.latent, dtype=dtype),
        torch.tensor([500, 500]),
        torch.randn(2, 77, eager.config.cross_attention_dim, dtype=dtype),
    )
    print(cpu_kind(), flush=True)

    def call(model):
        with torch.inference_mode(), compiled_call(SimpleNamespace(unet=model)):
            return model(*inputs, return_dict=False)[0]

    outputs, first = {}, {}
    for name, model in modes.items():  # the first call: warm-up, and for `compiled` the compile
        t0 = time.perf_counter()
        outputs[name] = call(model)
        first[name] = time.perf_counter() - t0
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), {args.dtype}; latent "
        f"{args.latent}x{args.latent}, "
        f"CFG batch 2; first call (the compile included for compiled modes): "
        + ", ".join(f"{n} {s:.1f} s" for n, s in first.items()),
        flush=True,
    )
    times = {name: [] for name in modes}
    for _ in range(args.repeats):
        for name, model in modes.items():
            t0 = time.perf_counter()
            call(model)
            times[name].append(time.perf_counter() - t0)
    base_best, base_median = min(times["eager"]), statistics.median(times["eager"])
    for name, values in times.items():
        best, median = min(values), statistics.median(values)
        rel = ((outputs[name].float() - outputs["eager"].float()).norm() / outputs["eager"].float().norm()).item()
        print(
            f"{name:10s} per guided step: best {best:.4g} s (eager/this {base_best / best:.2f}x), median "
            f"{median:.4g} s ({base_median / median:.2f}x); all {[float(f'{v:.3g}') for v in values]}; "
            f"relative L2 vs eager {rel:.1e}",
            flush=True,
        )
    for name in (n for n in ("compiled", "frozen") if n in modes):
        saved = base_median - statistics.median(times[name])
        cost = first[name] - base_median
        print(
            f"{name}: compile cost ~{cost:.0f} s; break-even after {cost / saved:.0f} steps"
            if saved > 0
            else f"{name}: compile cost ~{cost:.0f} s; not faster per step than eager"
        )


if __name__ == "__main__":
    main()

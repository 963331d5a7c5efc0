#!/usr/bin/env bash
# Issue 31's measurements, in one go, for a CPU that computes bfloat16 natively (AMX / AVX512-BF16); on an
# AVX2 CPU the same commands show that nothing regressed. Each step is a separate process, one after
# another (never two at once); logs go to $OUT (default /tmp/diffcli-native-bf16), one file per step, each
# headed by the CPU's model and flags. Builds the random-weight SD-1.5 (~2 GB) and SDXL (~7 GB) models on
# first use (bench/real_size.py). About an hour on a 2-core Xeon with AMX; docs/benchmarks.md keeps one
# table per CPU kind.
#
#     bash bench/native_bf16.sh [sd15|sdxl|step|compile|all]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/diffcli-native-bf16}
mkdir -p "$OUT"
what=${1:-all}
run() {  # NAME COMMAND...: the command's output to $OUT/NAME.log, and to the terminal
    echo "== $1: ${*:2}" | tee "$OUT/$1.log"
    "${@:2}" 2>&1 | tee -a "$OUT/$1.log"
}
if [[ $what == sd15 || $what == all ]]; then
    # SD-1.5 architecture, 512², 10 steps, CFG: diffcli's default vs plain diffusers fp32 and bf16 scripts
    # (bars: <= 0.85x plain bf16, <= 0.35x plain fp32), pixel differences printed
    run sd15 python bench/real_size.py --arch sd15 --size 512 --steps 10 --runs plain-fp32,plain-bf16,diffcli \
        --short plain-fp32 --short-steps 3
fi
if [[ $what == step || $what == all ]]; then
    # one guided SD-1.5 UNet step by mode, in bfloat16: eager, frozen and plain compiled, int8 (weight-only,
    # dynamic); the compile costs
    run step python bench/unet_step.py --dtype bfloat16 --repeats 4 --modes eager,frozen,compiled,int8,int8-dynamic
fi
if [[ $what == compile || $what == all ]]; then
    # `diffcli batch --compile`, 8 images of that job (bar: per image <= 0.7x the plain bf16 script's)
    run compile python bench/compile.py --model "${TMPDIR:-/tmp}/diffcli-real-size/sd15" --images 8 --dtype auto \
        --options "--steps 10 --cfg 7.5 -W 512 -H 512"
fi
if [[ $what == sdxl || $what == all ]]; then
    # SDXL architecture at 768², composed from three-step runs
    run sdxl python bench/real_size.py --arch sdxl --size 768 --steps 10 --runs plain-bf16,diffcli \
        --short plain-bf16,diffcli --short-steps 3
fi
echo "logs in $OUT"

"""End to end: `diffcli txt2img` against a plain diffusers script doing the same load + generate + save.

Both run as fresh processes, interleaved, with the same model, prompt, seed, steps, cfg, scheduler and
dtype; the median wall time and the median CPU time (user + sys of the child, steadier on a busy
machine) of each, and their ratios, are printed.

    python bench/end_to_end.py [--model tiny] [-n 7] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAIN = """
import sys, torch
from diffusers import AutoPipelineForText2Image, {cls}
path, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg, seed, dtype = float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
pipe = AutoPipelineForText2Image.from_pretrained(path, torch_dtype=getattr(torch, dtype))
pipe.scheduler = {cls}.from_config(pipe.scheduler.config, **{options!r})
image = pipe("castle at dusk", num_inference_steps=steps, guidance_scale=cfg,
             generator=torch.Generator("cpu").manual_seed(seed)).images[0]
image.save(out)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("-n", type=int, default=7)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    from diffcli.models import resolve
    from diffcli.models.layout import read_layout
    from diffcli.schedulers import spec

    ref = resolve(args.model, offline=True)
    rec = read_layout(ref.path).recommended()
    entry = spec(rec["scheduler"])
    plain = PLAIN.format(cls=entry.cls, options=entry.options)
    times = {"diffcli": [], "plain": []}
    cpu = {"diffcli": [], "plain": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.n):
            out_a, out_b = Path(tmp, f"a{i}.png"), Path(tmp, f"b{i}.png")
            cmds = {
                "diffcli": [
                    sys.executable,
                    "-m",
                    "diffcli",
                    "txt2img",
                    "castle at dusk",
                    "-m",
                    args.model,
                    "--seed",
                    "1",
                    "--dtype",
                    args.dtype,
                    "-o",
                    str(out_a),
                    "--quiet",
                ],
                "plain": [
                    sys.executable,
                    "-c",
                    plain,
                    str(ref.path),
                    str(out_b),
                    str(rec["steps"]),
                    str(rec["cfg"]),
                    "1",
                    args.dtype,
                ],
            }
            for name, cmd in cmds.items():
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
                times[name].append(time.perf_counter() - t0)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    print(json.dumps({"model": args.model, "settings": rec, "dtype": args.dtype, "runs": args.n}))
    for label, data in (("wall", times), ("cpu", cpu)):
        a, b = statistics.median(data["diffcli"]), statistics.median(data["plain"])
        print(f"{label:4s}: diffcli txt2img median {a:.2f} s, plain diffusers median {b:.2f} s, ratio {a / b:.3f}")


if __name__ == "__main__":
    main()

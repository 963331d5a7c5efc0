"""Where a student's time goes: teacher (its defaults) vs a distilled student at 4 steps, batch 1.

    python bench/student_time.py STUDENT_DIR [--rounds 30] [--threads 1]

Both are loaded as the distill report loads them. Prints, as ratios in the same process:
  * seconds per image, teacher vs student, interleaved rounds (median), before and after
    diffcli.pipelines.prepare_libraries() caches the attention processors' signatures;
  * the parts: UNet call at batch 1 and 2 (the teacher's guided pair), student UNet call, decode of
    one 64-px image by the teacher's VAE and by the student's autoencoder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _median_ms(fn, n: int) -> float:
    for _ in range(3):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("student")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from diffcli import guidance
    from diffcli.distill.report import load_sampling_teacher
    from diffcli.distill.student import load_student
    from diffcli.models.lora import read_own
    from diffcli.pipelines import _cache_processor_signatures

    record = read_own(Path(args.student))["distilled_from"]
    td = record["teacher_defaults"]
    teacher = load_sampling_teacher(record["teacher_path"], td["scheduler"])
    student = load_student(args.student)  # (calls prepare_libraries: undo its cache for the 'before' row)
    from diffusers.models import attention_processor

    for obj in vars(attention_processor).values():
        call = getattr(obj, "__call__", None) if isinstance(obj, type) else None
        if call is not None and hasattr(call, "__signature__"):
            del call.__signature__
    s_cfg = float(read_own(Path(args.student)).get("cfg") or 1.0)
    size, prompt = int(td.get("width") or 64), ["a red castle on the left at dusk on grass"]

    def draw(pipe, steps, cfg, cutoff):
        return pipe(
            prompt,
            num_inference_steps=steps,
            width=size,
            height=size,
            generator=[torch.Generator().manual_seed(0)],
            **guidance.pipeline_kwargs(pipe, cfg, cutoff, steps),
        ).images

    def pair():
        t_ms, s_ms = [], []
        for _ in range(3):
            draw(teacher, td["steps"], td["cfg"], td.get("cfg_cutoff") or 0.0)
            draw(student, 4, s_cfg, 0.0)
        for _ in range(args.rounds):
            t = time.perf_counter()
            draw(teacher, td["steps"], td["cfg"], td.get("cfg_cutoff") or 0.0)
            t_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            draw(student, 4, s_cfg, 0.0)
            s_ms.append((time.perf_counter() - t) * 1000)
        return statistics.median(t_ms), statistics.median(s_ms)

    rows = []
    with torch.inference_mode():
        rows.append(("as diffusers ships", *pair()))
        _cache_processor_signatures()
        rows.append(("signatures cached", *pair()))
        lat = torch.randn(1, 4, size // 4, size // 4)
        text = teacher.encode_prompt(prompt, "cpu", 1, False)[0]
        w = torch.zeros(1, student.unet.config.time_cond_proj_dim or 1)
        parts = {
            "teacher UNet, batch 1": _median_ms(lambda: teacher.unet(lat, 500, text), args.rounds),
            "teacher UNet, batch 2": _median_ms(
                lambda: teacher.unet(lat.repeat(2, 1, 1, 1), 500, text.repeat(2, 1, 1)), args.rounds
            ),
            "student UNet, batch 1": _median_ms(lambda: student.unet(lat, 500, text, timestep_cond=w), args.rounds),
            f"teacher VAE decode ({type(teacher.vae).__name__})": _median_ms(
                lambda: teacher.vae.decode(lat), args.rounds
            ),
            f"student decode ({type(student.vae).__name__})": _median_ms(lambda: student.vae.decode(lat), args.rounds),
        }
    print(
        f"{args.student}: teacher {td['steps']} steps cfg {td['cfg']} cutoff {td.get('cfg_cutoff')}, "
        f"student 4 steps cfg {s_cfg}; {args.threads} thread(s), {args.rounds} rounds, batch 1"
    )
    print("| | teacher ms/image | student ms/image | ratio |\n|---|---|---|---|")
    for name, t, s in rows:
        print(f"| {name} | {t:.1f} | {s:.1f} | {s / t:.3f} |")
    print("\n| part | ms |\n|---|---|")
    for name, ms in parts.items():
        print(f"| {name} | {ms:.2f} |")


if __name__ == "__main__":
    main()

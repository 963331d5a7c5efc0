"""How much a distill report's quality ratios move with the prompt set and its size.

    python bench/distill_sets.py STUDENT_DIR [STUDENT_DIR ...] [--sets 2024,99,7,31,123] [--n 512]
                                 [--shift 0.5] [--teacher-vae] [--vae DIR ...] [--threads 2]

The report (diffcli/distill/report.py) scores the 4-step student against the bundled teacher on one
set of held-out caption-grammar prompts (seed 2024, 512 prompts, generation seeds 0..). This draws
the teacher at its defaults and each student at 4 steps on several such sets, with the report's own
generation code and the bundled evaluator, and prints per set and on average the adherence ratio
and the Fréchet-distance ratio (student / teacher). With the first set 2024 and --n 512 the first
rows are the report's own figures. --teacher-vae also scores each student decoded by the teacher's
VAE instead of its own autoencoder (what the smaller decoder costs); --vae DIR (repeatable) scores
each student decoded by the autoencoder in DIR (e.g. a candidate tiny autoencoder, before shipping it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("students", nargs="+")
    ap.add_argument("--sets", default="2024,99,7,31,123", help="prompt-set seeds, comma-separated")
    ap.add_argument("--n", type=int, default=512, help="prompts per set")
    ap.add_argument("--shift", type=float, default=None, help="default: each student's own")
    ap.add_argument("--teacher-vae", action="store_true")
    ap.add_argument(
        "--vae", action="append", default=[], help="another autoencoder directory to decode each student with"
    )
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)

    import torch
    from diffusers import AutoModel

    from diffcli.bundled import model_dir
    from diffcli.bundled.evaluator import load_evaluator
    from diffcli.distill.report import _generate, heldout_prompts, load_sampling_teacher
    from diffcli.distill.student import load_student
    from diffcli.models.lora import read_own
    from diffcli.pipelines import prepare_libraries

    torch.set_num_threads(a.threads)
    prepare_libraries()
    defaults = read_own(model_dir("tiny"))
    teacher = load_sampling_teacher(model_dir("tiny"), defaults["scheduler"])
    decoders = {"teacher's VAE": teacher.vae} if a.teacher_vae else {}
    for d in a.vae:
        decoders[d] = AutoModel.from_pretrained(d, torch_dtype=torch.float32).eval()
    students = {}
    for s in a.students:
        pipe = load_student(s, "cpu")
        own = read_own(Path(s))
        settings = (float(own.get("cfg") or 1.0), a.shift if a.shift is not None else own.get("shift"))
        students[s] = (pipe, *settings)
        for name, vae in decoders.items():
            with_vae = type(pipe)(**{**pipe.components, "vae": vae})
            with_vae.set_progress_bar_config(disable=True)
            students[f"{s} [{name}]"] = (with_vae, *settings)
    evaluator = load_evaluator()
    ratios = {s: [] for s in students}
    for seed in [int(x) for x in a.sets.split(",")]:
        prompts = heldout_prompts(a.n, seed=seed)
        t = evaluator.score(
            prompts,
            _generate(
                teacher,
                prompts,
                int(defaults["steps"]),
                float(defaults["cfg"]),
                64,
                float(defaults.get("cfg_cutoff") or 0.0),
            ),
        )
        print(f"set {seed}, {a.n} prompts: teacher adherence {t['adherence']:.4f} FD {t['fd']:.2f}", flush=True)
        for s, (pipe, cfg, shift) in students.items():
            r = evaluator.score(prompts, _generate(pipe, prompts, 4, cfg, 64, 0.0, shift=shift))
            ratio = (r["adherence"] / t["adherence"], r["fd"] / t["fd"])
            ratios[s].append(ratio)
            print(
                f"  {s} (shift {shift}): adherence {r['adherence']:.4f} FD {r['fd']:.2f}  "
                f"ratios {ratio[0]:.3f} / {ratio[1]:.3f}",
                flush=True,
            )
    for s, rs in ratios.items():
        print(
            f"mean over {len(rs)} sets: {s}: adherence ratio {statistics.mean(r[0] for r in rs):.3f}, "
            f"FD ratio {statistics.mean(r[1] for r in rs):.3f}"
        )


if __name__ == "__main__":
    main()

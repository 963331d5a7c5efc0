"""`diffcli distill`: turn a text-to-image model into a 1-8-step latent consistency student.

Modules (import-light from the top; torch is imported only by the ones that train):
  config      DistillConfig: every setting, validated without torch
  preflight   all checks that need no weights (teacher kind, data, --out, resume state)
  data        data sources: --data folder, --prompts (teacher-generated, cached), bundled scenes
  solver      the LCM math: DDIM solver, boundary scalings, guidance embedding
  lcm         the student/target/teacher set-up and one distillation step (methods lcm, lcm-lora)
  trainer     the accelerate loop: accumulation, mixed precision, EMA, checkpoints, progress
  checkpoint  atomic checkpoints and resume
  student     writing the student (diffusers directory or LoRA with its base recorded), loading it
  (the LoRA student directory format lives in diffcli.models.lora: the resolver reads it)
  report      teacher vs student quality/speed report (JSON + Markdown)
  events      progress bar / JSON-lines events for training
  runner      the command end to end (checks, train, export, report), and `--report DIR`
"""

METHODS = ("lcm", "lcm-lora")

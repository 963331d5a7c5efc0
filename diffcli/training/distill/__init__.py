"""The training half of `diffcli distill` (the command itself, its checks, the student's format and
the report live in diffcli.distill; diffcli.distill.runner starts `trainer.train`).

  data        data sources: --data folder, --prompts (teacher-generated, cached), bundled scenes
  solver      the LCM math: DDIM solver, boundary scalings, guidance embedding
  lcm         the student/target/teacher set-up and one distillation step (methods lcm, lcm-lora)
  trainer     the accelerate loop: accumulation, mixed precision, EMA, checkpoints, progress
  checkpoint  atomic checkpoints and resume
"""

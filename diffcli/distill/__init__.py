"""`diffcli distill`: turn a text-to-image model into a 1-8-step latent consistency student.

Modules (import-light from the top; torch is imported only by the ones that load models):
  config      DistillConfig: every setting, validated without torch
  preflight   all checks that need no weights (teacher kind, data, --out, resume state)
  compact     the compact student's UNet config (torch-free, so preflight can check it)
  components  loading one model component in float32 from local files
  student     writing the student (diffusers directory or LoRA with its base recorded), loading it
  (the LoRA student directory format lives in diffcli.models.lora: the resolver reads it)
  report      teacher vs student quality/speed report (JSON + Markdown)
  events      progress bar / JSON-lines events for training
  runner      the command end to end (checks, train, export, report), and `--report DIR`; the one
              runtime module that imports diffcli.training (its distill trainer)

The training itself lives in diffcli.training.distill: data (the latent bank), solver (the LCM
math), lcm (student/target set-up and one step), trainer (the accelerate loop), checkpoint.
"""

METHODS = ("lcm", "lcm-lora")

"""Latent consistency distillation: student / EMA target / frozen teacher, and one training step.

  lcm       the full UNet is distilled; the student gets guidance-scale (w) conditioning through
            the UNet's `time_cond_proj_dim`, and an EMA copy of it is the target network
  lcm-lora  a LoRA (peft) on the teacher's UNet; the teacher is the same UNet with the adapter
            disabled, the target is the student itself without gradients (as in LCM-LoRA)

A compact lcm student (--student-unet compact, see diffcli/distill/compact.py) first regresses the
teacher's guided prediction for --kd-steps steps (knowledge distillation), then consistency
distillation starts.
"""

from __future__ import annotations

import copy
import random

import torch

from diffcli.distill.compact import compact_config, removed_prefixes
from diffcli.training.distill import solver as S

LORA_TARGETS = [
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
    "conv_shortcut",
    "downsamplers.0.conv",
    "upsamplers.0.conv",
    "time_emb_proj",
]


def make_student(teacher_unet, method: str, time_cond_dim: int = 256, lora_rank: int = 16, compact: bool = False):
    """(student, target): target is an EMA copy for lcm, None for lcm-lora."""
    from diffusers import UNet2DConditionModel

    if method == "lcm":
        dim = teacher_unet.config.time_cond_proj_dim or time_cond_dim
        extra = compact_config(teacher_unet.config) if compact else {}
        student = UNet2DConditionModel.from_config(teacher_unet.config, time_cond_proj_dim=dim, **extra)
        missing, unexpected = student.load_state_dict(teacher_unet.state_dict(), strict=False)
        assert all(compact and k.startswith(removed_prefixes(len(student.down_blocks))) for k in unexpected), unexpected
        cond_proj = getattr(student.time_embedding, "cond_proj", None)
        if cond_proj is not None and any(k.startswith("time_embedding.cond_proj") for k in missing):
            torch.nn.init.zeros_(cond_proj.weight)  # start exactly at the teacher; w-conditioning is learned
        student.to(torch.float32).train()
        target = copy.deepcopy(student).requires_grad_(False).eval()
        return student, target
    from peft import LoraConfig

    student = teacher_unet
    student.requires_grad_(False)
    student.add_adapter(
        LoraConfig(r=lora_rank, lora_alpha=lora_rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS)
    )
    for p in student.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    student.train()
    return student, None


@torch.no_grad()
def ema_update(target, student, decay: float) -> None:
    tp = list(target.parameters())
    sp = [p.detach().float() for p in student.parameters()]
    torch._foreach_lerp_(tp, sp, 1.0 - decay)


class Conditioner:
    """UNet conditioning from the teacher's frozen text encoder(s): SD-1/2, and SDXL (pooled text and
    size/crop time ids). The empty prompt's conditioning is computed once."""

    def __init__(self, pipe, device, resolution: int):
        self.pipe, self.device = pipe, device
        self.xl = hasattr(pipe, "text_encoder_2")
        self.time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=torch.float32)
        zeros = self.xl and bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False))
        self.uncond = self.encode([""])
        if zeros:  # as the SDXL pipelines do for an empty negative prompt
            self.uncond = {k: _zeros_like(v) for k, v in self.uncond.items()}

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> dict:
        out = self.pipe.encode_prompt(
            prompt=prompts, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        emb = out[0].float()
        if not self.xl:
            return {"encoder_hidden_states": emb}
        pooled = out[2].float()
        ids = self.time_ids.to(self.device).expand(len(prompts), -1)
        return {"encoder_hidden_states": emb, "added_cond_kwargs": {"text_embeds": pooled, "time_ids": ids}}


def _zeros_like(v):
    return (
        {k: (torch.zeros_like(x) if k == "text_embeds" else x) for k, x in v.items()}
        if isinstance(v, dict)
        else torch.zeros_like(v)
    )


def expand(cond: dict, n: int) -> dict:
    def rep(x):
        return x.expand(n, *x.shape[1:]) if x.shape[0] == 1 else x

    return {k: ({kk: rep(vv) for kk, vv in v.items()} if isinstance(v, dict) else rep(v)) for k, v in cond.items()}


def concat(a: dict, b: dict) -> dict:
    return {
        k: ({kk: torch.cat([v[kk], b[k][kk]]) for kk in v} if isinstance(v, dict) else torch.cat([v, b[k]]))
        for k, v in a.items()
    }


class LCMStep:
    """Computes the consistency distillation loss for one batch of latents and captions."""

    def __init__(self, config, pipe, teacher_unet, student, target, device):
        self.cfg, self.device = config, device
        self.teacher, self.student, self.target = teacher_unet, student, target
        sched_config = dict(pipe.scheduler.config)
        self.prediction_type = sched_config.get("prediction_type", "epsilon")
        from diffusers import DDPMScheduler

        self.noise_scheduler = DDPMScheduler.from_config(sched_config)
        acp = self.noise_scheduler.alphas_cumprod.float()
        self.T = int(self.noise_scheduler.config.num_train_timesteps)
        self.alphas, self.sigmas = acp.sqrt().to(device), (1 - acp).sqrt().to(device)
        self.solver = S.DDIMSolver(acp, self.T, config.num_ddim_timesteps)
        self.solver.ddim_timesteps = self.solver.ddim_timesteps.to(device)
        self.solver.ddim_alpha_cumprods_prev = self.solver.ddim_alpha_cumprods_prev.to(device)
        self.scaling = float(pipe.vae.config.scaling_factor)
        self.cond = Conditioner(pipe, device, config.resolution)
        self.w_cond = config.method == "lcm"
        self.time_cond_dim = getattr(student, "config", None) and student.config.time_cond_proj_dim
        self.cutoff_t = float(config.cfg_cutoff or 0.0) * self.T  # the teacher guides only at t >= this

    def __call__(
        self, student_module, z0: torch.Tensor, captions: list[str], gen: torch.Generator, autocast, kd: bool = False
    ):
        """The consistency loss; with KD, the distance of the student's raw prediction to the teacher's
        guided one (same noisy latents, timesteps and guidance draw)."""
        cfg, dev = self.cfg, self.device
        bsz = z0.shape[0]
        latents = (z0 * self.scaling).to(dev)
        index = torch.randint(0, cfg.num_ddim_timesteps, (bsz,), generator=gen).to(dev)
        start_t = self.solver.ddim_timesteps[index]
        t = (start_t - self.solver.step_ratio).clamp(min=0)
        c_skip_start, c_out_start = S.boundary_scalings(start_t)
        c_skip, c_out = S.boundary_scalings(t)
        noise = torch.randn(latents.shape, generator=gen).to(dev)
        noisy = self.noise_scheduler.add_noise(latents, noise, start_t)
        lo, hi = cfg.guidance
        g = lo + (hi - lo) * torch.rand(bsz, generator=gen)
        w = (g - 1.0).to(dev)  # teacher guidance: cond + w (cond - uncond); pipelines embed (scale - 1)
        w_emb = S.guidance_embedding(w, self.time_cond_dim).to(dev) if self.w_cond else None
        cond = self.cond.encode(captions)
        uncond = expand(self.cond.uncond, bsz)
        w4 = torch.where(start_t >= self.cutoff_t, w, torch.zeros_like(w)).reshape(-1, 1, 1, 1)

        with autocast():
            out = student_module(noisy, start_t, timestep_cond=w_emb, **cond).sample
        if kd:
            with torch.no_grad(), autocast():
                both = self.teacher(
                    torch.cat([noisy, noisy]), torch.cat([start_t, start_t]), **concat(cond, uncond)
                ).sample.float()
            cond_out, uncond_out = both.chunk(2)
            return torch.nn.functional.mse_loss(out.float(), cond_out + w4 * (cond_out - uncond_out))
        x0 = S.predicted_x0(out.float(), start_t, noisy, self.prediction_type, self.alphas, self.sigmas)
        model_pred = c_skip_start * noisy + c_out_start * x0

        with torch.no_grad():
            with autocast(), self._teacher_mode():
                both = self.teacher(
                    torch.cat([noisy, noisy]), torch.cat([start_t, start_t]), **concat(cond, uncond)
                ).sample.float()
            cond_out, uncond_out = both.chunk(2)
            args = (start_t, noisy, self.prediction_type, self.alphas, self.sigmas)
            c_x0, u_x0 = S.predicted_x0(cond_out, *args), S.predicted_x0(uncond_out, *args)
            c_eps, u_eps = S.predicted_noise(cond_out, *args), S.predicted_noise(uncond_out, *args)
            pred_x0 = c_x0 + w4 * (c_x0 - u_x0)
            pred_eps = c_eps + w4 * (c_eps - u_eps)
            x_prev = self.solver.ddim_step(pred_x0, pred_eps, index)
            target_net = self.target if self.target is not None else self.student
            with autocast():
                tout = target_net(x_prev, t, timestep_cond=w_emb, **cond).sample.float()
            t_x0 = S.predicted_x0(tout, t, x_prev, self.prediction_type, self.alphas, self.sigmas)
            target = c_skip * x_prev + c_out * t_x0
        return S.consistency_loss(model_pred, target, cfg.loss, cfg.huber_c)

    def _teacher_mode(self):
        """lcm-lora: the teacher is the student's UNet with the adapter switched off."""
        import contextlib

        if self.target is not None:
            return contextlib.nullcontext()
        unet = self.student

        @contextlib.contextmanager
        def off():
            unet.disable_adapters()
            try:
                yield
            finally:
                unet.enable_adapters()

        return off()


def new_generators(seed: int, rank: int):
    """The run's random sources for one process: torch (noise, timesteps, w, batches) and Python (captions)."""
    gen = torch.Generator().manual_seed(seed * 7919 + rank * 104729 + 1)
    return gen, random.Random(seed * 31 + rank)

"""The math of latent consistency distillation (Luo et al. 2023), as in diffusers'
`examples/consistency_distillation/train_lcm_distill_sd_wds.py`: a DDIM solver on a skipping-step
schedule, the consistency boundary scalings, the guidance-scale embedding and x0/noise conversions.
"""

from __future__ import annotations

import math

import torch


def extract(values: torch.Tensor, index: torch.Tensor, ndim: int = 4) -> torch.Tensor:
    """values[index] shaped (batch, 1, 1, 1) to broadcast over latents."""
    out = values.to(index.device)[index]
    return out.reshape(out.shape[0], *([1] * (ndim - 1)))


class DDIMSolver:
    """One DDIM step from a skipping-step schedule of `ddim_steps` timesteps out of `T`."""

    def __init__(self, alphas_cumprod: torch.Tensor, timesteps: int = 1000, ddim_steps: int = 50):
        alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float32)
        step_ratio = timesteps // ddim_steps
        self.step_ratio = step_ratio
        self.ddim_timesteps = (torch.arange(1, ddim_steps + 1) * step_ratio).round().long() - 1
        self.ddim_alpha_cumprods = alphas_cumprod[self.ddim_timesteps]
        self.ddim_alpha_cumprods_prev = torch.cat([alphas_cumprod[:1], alphas_cumprod[self.ddim_timesteps[:-1]]])

    def ddim_step(self, pred_x0: torch.Tensor, pred_noise: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        alpha_prev = extract(self.ddim_alpha_cumprods_prev, index, pred_x0.ndim).to(pred_x0.dtype)
        return alpha_prev.sqrt() * pred_x0 + (1.0 - alpha_prev).sqrt() * pred_noise


def boundary_scalings(timestep: torch.Tensor, sigma_data: float = 0.5, timestep_scaling: float = 10.0):
    """c_skip, c_out: f(x, t) = c_skip(t) x + c_out(t) F(x, t), with f(x, 0) = x (LCMScheduler's scalings)."""
    scaled = timestep.float() * timestep_scaling
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
    return c_skip.reshape(-1, 1, 1, 1), c_out.reshape(-1, 1, 1, 1)


def guidance_embedding(w: torch.Tensor, dim: int = 256, dtype=torch.float32) -> torch.Tensor:
    """Sinusoidal embedding of the guidance scale w (same as the pipelines' `get_guidance_scale_embedding`)."""
    w = w.float() * 1000.0
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=w.device) * -(math.log(10000.0) / (half - 1)))
    emb = w[:, None] * freq[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb.to(dtype)


def predicted_x0(model_output, timesteps, sample, prediction_type: str, alphas, sigmas):
    a, s = extract(alphas, timesteps), extract(sigmas, timesteps)
    if prediction_type == "epsilon":
        return (sample - s * model_output) / a
    if prediction_type == "sample":
        return model_output
    if prediction_type == "v_prediction":
        return a * sample - s * model_output
    raise ValueError(f"unsupported prediction type {prediction_type}")


def predicted_noise(model_output, timesteps, sample, prediction_type: str, alphas, sigmas):
    a, s = extract(alphas, timesteps), extract(sigmas, timesteps)
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "sample":
        return (sample - a * model_output) / s
    if prediction_type == "v_prediction":
        return a * model_output + s * sample
    raise ValueError(f"unsupported prediction type {prediction_type}")


def consistency_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "huber", huber_c: float = 0.001):
    pred, target = pred.float(), target.float()
    if kind == "l2":
        return torch.nn.functional.mse_loss(pred, target)
    return torch.mean(torch.sqrt((pred - target) ** 2 + huber_c**2) - huber_c)

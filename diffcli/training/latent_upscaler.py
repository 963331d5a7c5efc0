"""Training recipe: a small x2 latent upscaler for the bundled model family (NOT yet trained).

    python -m diffcli.training.latent_upscaler --base diffcli/bundled/tiny --out .ckpt/tiny-x2 \
        --minutes 60 [--threads 2] [--low 64]

The result is a standard `StableDiffusionLatentUpscalePipeline` folder that `diffcli upscale
--method model -m DIR` runs (x2, tiled). It reuses the bundled model's frozen VAE, text encoder and
tokenizer and the recipes' shared helpers (training.common: renderer, budget, LR, EMA). Data: a held
scene is rendered at LOW and 2*LOW pixels; the UNet learns the 2*LOW latent given the LOW latent
(nearest-upsampled, concatenated) and the caption, with the K-diffusion (EDM, sigma_data = 1)
preconditioning the diffusers pipeline applies at inference:

    c_in = 1/sqrt(s^2+1), c_skip = 1/(s^2+1), c_out = s/sqrt(s^2+1), timestep = log(s)/4,
    D(x; s) = c_skip x + c_out F([c_in x, up(z_low)], log(s)/4, text, cond=[1]*64+[0]*64+pooled)[:, :4]

and the loss is (s^2+1)/s^2 * |D - z_high|^2 (EDM weighting). Sigmas are drawn half log-uniform over
the Euler schedule's range, half log-normal(-1.2, 1.2).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from pathlib import Path

from diffcli import loading

NOISE_COND = 128  # the pipeline's noise-level embedding: 64 ones + 64 zeros


def make_unet(text_hidden: int, size: str = "full"):
    from diffusers import UNet2DConditionModel

    ch = {"full": (64, 128, 128), "tiny": (32, 32)}[size]
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=8,
        out_channels=5,
        layers_per_block=1,
        block_out_channels=ch,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(ch) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(ch) - 1) + ("UpBlock2D",),
        cross_attention_dim=text_hidden,
        attention_head_dim=max(1, ch[-1] // 32),
        norm_num_groups=min(32, ch[0]),
        time_embedding_type="fourier",
        time_cond_proj_dim=NOISE_COND + text_hidden,
        act_fn="silu",
    )


def make_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="sample",
        num_train_timesteps=1000,
    )


class PairBuffer:
    """Scenes with the VAE posteriors (mean, std, scaled) of their LOW and 2*LOW renders."""

    def __init__(self, vae, rng: random.Random, n: int, low: int):
        self.vae, self.rng, self.low = vae, rng, low
        self.scenes, self.lo_m, self.lo_s, self.hi_m, self.hi_s = self._make(n)

    def _make(self, n):
        import numpy as np
        import torch

        from diffcli.bundled import scenes
        from diffcli.training.common import render_batch, to_float

        sc, lo = render_batch(self.rng, n, self.low)
        hi = torch.from_numpy(np.stack([np.array(scenes.render(s, 2 * self.low)) for s in sc])).permute(0, 3, 1, 2)
        sf = self.vae.config.scaling_factor
        out = []
        with torch.no_grad():
            for imgs in (lo, hi):
                ms, ss = [], []
                for i in range(0, n, 32):
                    d = self.vae.encode(to_float(imgs[i : i + 32])).latent_dist
                    ms.append(d.mean * sf)
                    ss.append(d.std * sf)
                out += [torch.cat(ms), torch.cat(ss)]
        return (sc, *out)

    def refresh(self, k: int):
        import torch

        sc, lm, ls, hm, hs = self._make(k)
        idx = self.rng.sample(range(len(self.scenes)), k)
        t = torch.tensor(idx)
        for j, i in enumerate(idx):
            self.scenes[i] = sc[j]
        self.lo_m[t], self.lo_s[t], self.hi_m[t], self.hi_s[t] = lm, ls, hm, hs

    def sample(self, bs: int):
        import torch

        idx = [self.rng.randrange(len(self.scenes)) for _ in range(bs)]
        t = torch.tensor(idx)
        z_lo = self.lo_m[t] + self.lo_s[t] * torch.randn_like(self.lo_s[t])  # the pipeline samples the posterior
        z_hi = self.hi_m[t]
        return [self.scenes[i] for i in idx], z_lo, z_hi


def encode_text(te, tokenizer, prompts: list[str]):
    import torch

    ids = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        out = te(ids, output_hidden_states=True)
    return out.hidden_states[-1], out.pooler_output


def sample_sigmas(bs: int, lo: float, hi: float):
    import torch

    uni = torch.exp(torch.empty(bs).uniform_(math.log(lo), math.log(hi)))
    lognormal = torch.exp(torch.randn(bs) * 1.2 - 1.2)
    return torch.where(torch.rand(bs) < 0.5, uni, lognormal).clamp(lo, hi)


def denoise(unet, x, sigma, z_lo, text, pooled):
    """D(x; sigma) exactly as StableDiffusionLatentUpscalePipeline computes it (noise level 0)."""
    import torch
    import torch.nn.functional as F

    s = sigma.view(-1, 1, 1, 1)
    c_in, c_skip, c_out = 1 / torch.sqrt(s**2 + 1), 1 / (s**2 + 1), s / torch.sqrt(s**2 + 1)
    cond = torch.cat([torch.ones(x.shape[0], NOISE_COND // 2), torch.zeros(x.shape[0], NOISE_COND // 2), pooled], 1)
    inp = torch.cat([c_in * x, F.interpolate(z_lo, scale_factor=2, mode="nearest")], 1)
    out = unet(inp, torch.log(sigma) * 0.25, encoder_hidden_states=text, timestep_cond=cond).sample[:, :-1]
    return c_skip * x + c_out * out


def export(out: Path, vae, te, tokenizer, unet, steps: int) -> Path:
    import shutil

    from diffusers import StableDiffusionLatentUpscalePipeline

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe = StableDiffusionLatentUpscalePipeline(
        vae=vae, text_encoder=te, tokenizer=tokenizer, unet=unet, scheduler=make_scheduler()
    )
    pipe.save_pretrained(tmp, safe_serialization=True)
    (tmp / "diffcli.json").write_text(
        json.dumps({"family": "upscaler", "steps": steps, "cfg": 0.0, "scheduler": "euler"}, indent=2) + "\n"
    )
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--base", default="diffcli/bundled/tiny", help="the bundled text-to-image model (VAE, text encoder)"
    )
    ap.add_argument("--out", default=".ckpt/tiny-x2")
    ap.add_argument("--size", default="full", choices=["full", "tiny"])
    ap.add_argument("--low", type=int, default=64, help="low-resolution render size (pixels)")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--steps", type=int, default=None, help="step budget (overrides --minutes)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--buffer", type=int, default=2048)
    ap.add_argument("--refresh-every", type=int, default=500)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--caption-drop", type=float, default=0.25)
    ap.add_argument("--infer-steps", type=int, default=10, help="recommended sampling steps written to diffcli.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    from diffcli.bundled import scenes
    from diffcli.training.common import Budget, ema_update, lr_at

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed + 7)
    base = Path(a.base)
    f32 = {"torch_dtype": torch.float32}
    vae = loading.from_pretrained(AutoencoderKL, base / "vae", **f32).eval().requires_grad_(False)
    te = loading.from_pretrained(CLIPTextModel, base / "text_encoder", **f32).eval().requires_grad_(False)
    tokenizer = loading.from_pretrained(CLIPTokenizer, base / "tokenizer")
    unet = make_unet(te.config.hidden_size, a.size)
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=a.lr, betas=(0.9, 0.99), weight_decay=0.01)
    sched = make_scheduler()
    s_lo, s_hi = float(sched.sigmas[sched.sigmas > 0].min()), float(sched.sigmas.max())
    buf = PairBuffer(vae, rng, a.buffer, a.low)
    budget = Budget(a.steps, a.minutes)
    step, t_log, avg = 0, time.time(), None
    while not budget.done(step):
        for g in opt.param_groups:
            g["lr"] = lr_at(budget.progress(step), step, a.lr, a.warmup)
        sc, z_lo, z_hi = buf.sample(a.batch)
        prompts = [scenes.caption(s, rng, drop_prob=a.caption_drop) for s in sc]
        text, pooled = encode_text(te, tokenizer, prompts)
        sigma = sample_sigmas(a.batch, s_lo, s_hi)
        x = z_hi + sigma.view(-1, 1, 1, 1) * torch.randn_like(z_hi)
        d = denoise(unet, x, sigma, z_lo, text, pooled)
        weight = ((sigma**2 + 1) / sigma**2).view(-1, 1, 1, 1)
        loss = (weight * (d - z_hi) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema_update(ema, unet, a.ema if step > a.warmup else 0.0)
        step += 1
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if a.refresh_every and step % a.refresh_every == 0:
            buf.refresh(max(1, len(buf.scenes) // 8))
        if time.time() - t_log > 60:
            print(f"step {step} loss {avg:.4f} elapsed {budget.elapsed / 60:.1f} min", flush=True)
            t_log = time.time()
    out = export(Path(a.out), vae, te, tokenizer, ema, a.infer_steps)
    print(f"trained {step} steps; exported {out}", flush=True)


if __name__ == "__main__":
    main()

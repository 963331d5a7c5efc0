"""Training recipe for the bundled tiny model: stage 1 VAE, stage 2 text encoder + UNet.

    python -m diffcli.training.bundled --out diffcli/bundled/tiny --ckpt-dir .ckpt/bundled \
        --vae-minutes 25 --unet-minutes 80 [--resume]

Data is rendered on the fly into an in-memory buffer that is partly refreshed now and then.
Checkpoints (models, EMA, optimizer, step, elapsed time) go to --ckpt-dir every few minutes;
fp16 weights are exported to --out after each stage and periodically during stage 2.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffcli import loading
from diffcli.bundled import scenes
from diffcli.bundled.vocab import build_tokenizer
from diffcli.training import arch
from diffcli.training.common import (
    Budget,
    ThreadTuner,
    ema_update,
    file_logger,
    load_ckpt,
    lr_at,
    render_batch,
    sample_timesteps,
    save_ckpt,
    to_float,
)
from diffcli.training.export import export_pipeline


def _bar(total: int | None, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True, mininterval=5.0)


# ------------------------------------------------------------------ stage 1
def train_vae(args, acc, log):
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    vae = arch.make_vae(args.size)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    ck = Path(args.ckpt_dir) / "vae.pt"
    step, elapsed = 0, 0.0
    if args.resume and ck.exists():
        st = load_ckpt(ck, rng, opt, model=vae)
        step, elapsed = st["step"], st["elapsed"]
        if st.get("done"):
            log(f"vae: stage already done at step {step}")
            return vae
        log(f"vae: resumed at step {step}")
    vae, opt = acc.prepare(vae, opt)
    budget = Budget(args.vae_steps, args.vae_minutes, elapsed)
    _, buf = render_batch(rng, args.buffer)
    bs, crop = args.batch, args.vae_crop
    bar = _bar(args.vae_steps, "vae")
    bar.update(step)
    last_ck = time.time()
    tuner = ThreadTuner(args.threads)
    while not budget.done(step):
        tuner.step()
        p = budget.progress(step)
        full = p >= 0.85  # last stretch on full images: matches test-time GroupNorm statistics
        for g in opt.param_groups:
            g["lr"] = lr_at(p, step, args.vae_lr, 100)
        idx = torch.randint(0, len(buf), (bs // 2 if full else bs,))
        x = to_float(buf[idx]).to(acc.device)
        if not full and crop < x.shape[-1]:
            i, j = np.random.randint(0, x.shape[-1] - crop + 1, 2)
            x = x[:, :, i : i + crop, j : j + crop]
        with acc.autocast():
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample.float()
            kl = post.kl().mean() / x[0].numel()
            loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + args.kl_weight * kl
        acc.backward(loss)
        acc.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        if step % 20 == 0:
            mse = F.mse_loss(rec.detach().clamp(-1, 1), x).item() / 4
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{10 * math.log10(1 / max(mse, 1e-10)):.1f}")
        if step % 200 == 0:  # refresh a quarter of the buffer
            k = len(buf) // 4
            _, new = render_batch(rng, k)
            buf[torch.randint(0, len(buf), (k,))] = new
        if step % 500 == 0:
            log(f"vae step {step} loss {loss.item():.4f} elapsed {budget.elapsed / 60:.1f} min threads {tuner.choice}")
        if time.time() - last_ck > args.ckpt_every * 60:
            last_ck = time.time()
            save_ckpt(
                ck,
                model=acc.unwrap_model(vae).state_dict(),
                opt=opt.state_dict(),
                step=step,
                elapsed=budget.elapsed,
                rng=rng.getstate(),
                torch_rng=torch.get_rng_state(),
                done=False,
            )
    bar.close()
    vae = acc.unwrap_model(vae)
    save_ckpt(
        ck,
        model=vae.state_dict(),
        opt=opt.state_dict(),
        step=step,
        elapsed=budget.elapsed,
        rng=rng.getstate(),
        torch_rng=torch.get_rng_state(),
        done=True,
    )
    psnr = vae_psnr(vae, acc.device, n=args.psnr_n)
    log(f"vae: done at step {step} ({budget.elapsed / 60:.1f} min), val PSNR {psnr:.2f} dB")
    return vae


@torch.no_grad()
def vae_psnr(vae, device="cpu", n: int = 256, seed: int = 12345, size: int = 64) -> float:
    """Mean PSNR (dB) of VAE reconstructions (posterior mode) of held-out SIZExSIZE renders."""
    vae.eval()
    _, imgs = render_batch(random.Random(seed), n, size)
    x = to_float(imgs).to(device)
    ps = []
    for i in range(0, n, 64 * 64 // size):
        xb = x[i : i + 64 * 64 // size]
        rec = vae.decode(vae.encode(xb.to(vae.dtype)).latent_dist.mode()).sample.float().clamp(-1, 1)
        mse = ((rec - xb) ** 2).mean(dim=(1, 2, 3)) / 4
        ps.append(10 * torch.log10(1 / mse.clamp_min(1e-10)))
    vae.train()
    return torch.cat(ps).mean().item()


# ------------------------------------------------------------------ stage 2
class LatentBuffer:
    """Scenes + VAE posterior (mean, std) of their renders, partly refreshed over time."""

    def __init__(self, vae, rng: random.Random, n: int, device, autocast):
        self.vae, self.rng, self.device, self.autocast = vae, rng, device, autocast
        self.scenes: list = []
        self.mean = self.std = None
        self.scenes, self.mean, self.std = self._make(n)

    @torch.no_grad()
    def _make(self, n):
        sc, imgs = render_batch(self.rng, n)
        means, stds = [], []
        for i in range(0, n, 32):
            with self.autocast():
                d = self.vae.encode(to_float(imgs[i : i + 32]).to(self.device)).latent_dist
            means.append(d.mean.float().cpu())
            stds.append(d.std.float().cpu())
        return sc, torch.cat(means), torch.cat(stds)

    def refresh(self, k: int):
        sc, m, s = self._make(k)
        idx = random.Random(self.rng.random()).sample(range(len(self.scenes)), k)
        for j, i in enumerate(idx):
            self.scenes[i] = sc[j]
        t = torch.tensor(idx)
        self.mean[t], self.std[t] = m, s

    def sample(self, bs: int):
        idx = [self.rng.randrange(len(self.scenes)) for _ in range(bs)]
        t = torch.tensor(idx)
        z = self.mean[t] + self.std[t] * torch.randn_like(self.std[t])
        return [self.scenes[i] for i in idx], z


def load_pretrained(init_dir, unet, te, log):
    """Start stage 2 from an exported pipeline folder (e.g. the committed fp16 weights)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    init_dir = Path(init_dir)
    unet.load_state_dict(loading.from_pretrained(UNet2DConditionModel, init_dir / "unet").float().state_dict())
    te.load_state_dict(loading.from_pretrained(CLIPTextModel, init_dir / "text_encoder").float().state_dict())
    log(f"unet: initialised from {init_dir}")


def train_unet(args, acc, vae, log):
    rng = random.Random(args.seed + 1)
    torch.manual_seed(args.seed + 1)
    tok_dir = Path(args.ckpt_dir) / "tokenizer"
    tokenizer = build_tokenizer(tok_dir)
    vae = vae.to(acc.device).eval().requires_grad_(False)
    # latent scale: unit variance of scaled latents
    buf = LatentBuffer(vae, rng, args.buffer, acc.device, acc.autocast)
    sf = float(1.0 / buf.mean.std())
    if args.init_from:  # keep the latent scale the initial weights were trained with
        sf = json.loads((Path(args.init_from) / "vae" / "config.json").read_text())["scaling_factor"]
    vae.register_to_config(scaling_factor=sf)
    log(f"unet: latent std {1 / sf:.4f} -> scaling_factor {sf:.4f}")
    unet, te = arch.make_unet(args.size), arch.make_text_encoder(args.size)
    noise_sched = arch.make_scheduler("ddpm")
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=args.unet_lr, betas=(0.9, 0.99), weight_decay=0.01)
    ck = Path(args.ckpt_dir) / "unet.pt"
    step, elapsed = 0, 0.0
    ema_unet, ema_te = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(te).requires_grad_(False)
    if args.resume and ck.exists():
        st = load_ckpt(ck, rng, opt, unet=unet, te=te, ema_unet=ema_unet, ema_te=ema_te)
        step, elapsed = st["step"], st["elapsed"]
        log(f"unet: resumed at step {step}")
    elif args.init_from:
        load_pretrained(args.init_from, unet, te, log)
        ema_unet.load_state_dict(unet.state_dict())
        ema_te.load_state_dict(te.state_dict())
    if step == 0 and not args.init_from:  # a loadable pipeline (trained VAE, untrained UNet) right away
        export_pipeline(args.out, vae, te, unet, tokenizer, arch.make_scheduler("dpm++2m"))
    unet, te, opt = acc.prepare(unet, te, opt)
    budget = Budget(args.unet_steps, args.unet_minutes, elapsed)
    acp = noise_sched.alphas_cumprod.to(acc.device)
    snr_all = acp / (1 - acp)
    bs = args.batch
    bar = _bar(args.unet_steps, "unet")
    bar.update(step)
    last_ck = last_export = time.time()
    loss_avg = None
    tuner = ThreadTuner(args.threads)

    def export(final=False):
        u, t = (ema_unet, ema_te) if step >= args.ema_start else (acc.unwrap_model(unet), acc.unwrap_model(te))
        export_pipeline(args.out, vae, t, u, tokenizer, arch.make_scheduler("dpm++2m"))
        log(f"unet: exported {'final ' if final else ''}weights at step {step} to {args.out}")

    def checkpoint():
        save_ckpt(
            ck,
            unet=acc.unwrap_model(unet).state_dict(),
            te=acc.unwrap_model(te).state_dict(),
            ema_unet=ema_unet.state_dict(),
            ema_te=ema_te.state_dict(),
            opt=opt.state_dict(),
            step=step,
            elapsed=budget.elapsed,
            rng=rng.getstate(),
            torch_rng=torch.get_rng_state(),
            scaling_factor=sf,
        )

    while not budget.done(step):
        tuner.step()
        p = budget.progress(step)
        lr = lr_at(p, step, args.unet_lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        sc, z0 = buf.sample(bs)
        caps = ["" if rng.random() < args.cfg_drop else scenes.caption(s, rng, drop_prob=args.caption_drop) for s in sc]
        ids = tokenizer(
            caps, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(acc.device)
        z0 = (z0 * sf).to(acc.device)
        noise = torch.randn_like(z0)
        t = sample_timesteps(
            bs, noise_sched.config.num_train_timesteps, args.high_t_frac, acc.device, args.high_t_start
        )
        zt = noise_sched.add_noise(z0, noise, t)
        target = noise_sched.get_velocity(z0, noise, t)
        snr = snr_all[t]
        # min-SNR-gamma, +1 so the pure-noise end (snr 0), where layout is decided, keeps full weight
        w = (torch.clamp(snr, max=args.min_snr) + 1) / (snr + 1)
        with acc.autocast():
            emb = te(ids)[0]
            pred = unet(zt, t, emb).sample.float()
            loss = ((pred - target) ** 2).mean(dim=(1, 2, 3))
            loss = (loss * w).mean()
        acc.backward(loss)
        acc.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step >= args.ema_start:
            decay = 0.0 if step == args.ema_start and not args.init_from else min(args.ema, (1 + step) / (10 + step))
            ema_update(ema_unet, acc.unwrap_model(unet), decay)
            ema_update(ema_te, acc.unwrap_model(te), decay)
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss_avg:.4f}", lr=f"{lr:.1e}")
        if step % 500 == 0:
            log(
                f"unet step {step} loss {loss_avg:.4f} lr {lr:.2e} elapsed {budget.elapsed / 60:.1f} min "
                f"threads {tuner.choice}"
            )
        if step % args.refresh_every == 0:
            buf.refresh(len(buf.scenes) // 8)
        if time.time() - last_ck > args.ckpt_every * 60:
            last_ck = time.time()
            checkpoint()
        if time.time() - last_export > args.export_every * 60:
            last_export = time.time()
            export()
    bar.close()
    checkpoint()
    export(final=True)
    return step


# ------------------------------------------------------------------ stage 3 (optional)
def _random_crops(bufs: dict, n: int, crop: int) -> torch.Tensor:
    """N random CROPxCROP windows, each from a render of a randomly chosen size."""
    sizes = list(bufs)
    out = []
    for _ in range(n):
        buf = bufs[sizes[np.random.randint(len(sizes))]]
        img = buf[np.random.randint(len(buf))]
        i, j = np.random.randint(0, img.shape[-1] - crop + 1, 2)
        out.append(img[:, i : i + crop, j : j + crop])
    return torch.stack(out)


def train_decoder(args, acc, vae, log):
    """Fine-tune only the VAE decoder (encoder and latents unchanged, so the UNet stays valid).

    Renders of every size in --decoder-sizes are cut into 64-px windows: at 128 or 256 px a window is
    a zoomed-in part of a scene (bigger shapes, softer gradients), which is what the upscalers decode.
    """
    rng = random.Random(args.seed + 2)
    ck = Path(args.ckpt_dir) / "decoder.pt"
    step, elapsed = 0, 0.0
    vae.requires_grad_(False)
    dec = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for q in dec:
        q.requires_grad_(True)
    opt = torch.optim.AdamW(dec, lr=args.decoder_lr, betas=(0.9, 0.99))
    if args.resume and ck.exists():
        st = load_ckpt(ck, rng, opt, model=vae)
        step, elapsed = st["step"], st["elapsed"]
        log(f"decoder: resumed at step {step}")
    budget = Budget(args.decoder_steps, args.decoder_minutes, elapsed)
    sizes = [int(x) for x in str(args.decoder_sizes).split(",")]
    per = args.buffer // 2 // len(sizes)
    bufs = {sz: render_batch(rng, max(128, per // (sz // 64) ** 2), sz)[1] for sz in sizes}
    tuner = ThreadTuner(args.threads)
    bar = _bar(args.decoder_steps, "decoder")
    last_ck = time.time()
    vae.train()

    def checkpoint():
        save_ckpt(
            ck, model=vae.state_dict(), opt=opt.state_dict(), step=step, elapsed=budget.elapsed, rng=rng.getstate()
        )

    while not budget.done(step):
        tuner.step()
        for g in opt.param_groups:
            g["lr"] = lr_at(budget.progress(step), step, args.decoder_lr, 50)
        x = to_float(_random_crops(bufs, args.batch // 2, 64)).to(acc.device)
        with acc.autocast():
            with torch.no_grad():
                z = vae.encode(x).latent_dist.sample()
            rec = vae.decode(z).sample.float()
            loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
        acc.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % 500 == 0:
            log(f"decoder step {step} loss {loss.item():.4f} elapsed {budget.elapsed / 60:.1f} min")
        if step % 200 == 0:  # refresh part of each buffer
            for sz, buf in bufs.items():
                k = max(1, len(buf) // (4 if sz == 64 else 16))
                buf[torch.randint(0, len(buf), (k,))] = render_batch(rng, k, sz)[1]
        if time.time() - last_ck > args.ckpt_every * 60:
            last_ck = time.time()
            checkpoint()
    bar.close()
    checkpoint()
    vae.eval().requires_grad_(False)
    log(
        f"decoder: done at step {step}, val PSNR {vae_psnr(vae, acc.device, n=args.psnr_n):.2f} dB (64 px), "
        f"{vae_psnr(vae, acc.device, n=args.psnr_n // 4, size=128):.2f} dB (128 px)"
    )
    out_vae = Path(args.out) / "vae"
    if out_vae.is_dir():  # swap in the new decoder; the rest of the export stays as it is
        sf = json.loads((out_vae / "config.json").read_text())["scaling_factor"]
        v = copy.deepcopy(vae).to("cpu", torch.float16)
        v.register_to_config(scaling_factor=sf)
        v.save_pretrained(out_vae, safe_serialization=True)
        log(f"decoder: exported to {out_vae}")
    return vae


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="diffcli/bundled/tiny")
    ap.add_argument("--ckpt-dir", default=".ckpt/bundled")
    ap.add_argument("--size", default="full", choices=sorted(arch.SIZES))
    ap.add_argument("--vae-minutes", type=float, default=25.0)
    ap.add_argument("--unet-minutes", type=float, default=80.0)
    ap.add_argument("--vae-steps", type=int, default=None, help="step budget (overrides --vae-minutes)")
    ap.add_argument("--unet-steps", type=int, default=None, help="step budget (overrides --unet-minutes)")
    ap.add_argument("--decoder-minutes", type=float, default=0.0, help="optional stage 3: decoder fine-tune")
    ap.add_argument("--decoder-steps", type=int, default=None)
    ap.add_argument("--decoder-lr", type=float, default=3e-4)
    ap.add_argument(
        "--decoder-sizes", default="64,128,256", help="render sizes the decoder fine-tune cuts its 64-px windows from"
    )
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--buffer", type=int, default=8192, help="renders kept in memory")
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--vae-crop", type=int, default=32)
    ap.add_argument("--kl-weight", type=float, default=1e-5)
    ap.add_argument("--unet-lr", type=float, default=8e-4)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--min-snr", type=float, default=5.0)
    ap.add_argument(
        "--init-from",
        default=None,
        help="stage 2 starts from this exported pipeline folder (fresh optimizer and budget)",
    )
    ap.add_argument(
        "--high-t-frac",
        type=float,
        default=0.0,
        help="fraction of UNet samples drawn from the noisiest timesteps (see --high-t-start)",
    )
    ap.add_argument(
        "--high-t-start", type=float, default=0.9, help="those samples come from [high_t_start * 1000, 1000)"
    )
    ap.add_argument("--cfg-drop", type=float, default=0.1)
    ap.add_argument("--caption-drop", type=float, default=0.25)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--ema-start", type=int, default=200)
    ap.add_argument("--refresh-every", type=int, default=1000)
    ap.add_argument("--ckpt-every", type=float, default=5.0, help="minutes")
    ap.add_argument("--export-every", type=float, default=15.0, help="minutes")
    ap.add_argument("--psnr-n", type=int, default=256, help="held-out renders for the VAE PSNR")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--stage",
        choices=["all", "vae", "unet", "decoder"],
        default="all",
        help="'decoder': only stage 3 on the VAE of --ckpt-dir (needs --decoder-minutes/steps)",
    )
    args = ap.parse_args(argv)

    from accelerate import Accelerator

    torch.set_num_threads(args.threads)
    acc = Accelerator(mixed_precision="bf16", cpu=not torch.cuda.is_available())
    log = file_logger(args.ckpt_dir)
    log(f"args: {vars(args)} device {acc.device}")
    vae = train_vae(args, acc, log)
    if args.stage == "vae":
        return
    if args.stage != "decoder":
        step = train_unet(args, acc, vae, log)
        log(f"training finished at unet step {step}")
    if args.decoder_minutes or args.decoder_steps:
        train_decoder(args, acc, vae, log)


if __name__ == "__main__":
    main()

"""A tiny autoencoder for the bundled model's latent space (the bundled model's TAESD).

diffusers' AutoencoderTiny (encoder 32 channels, decoder 48), taught by the bundled VAE: its encoder
learns the bundled encoder's (scaled) latent means, its decoder learns what the bundled decoder makes
of a latent, on-manifold and off it (a little noise on half the latents), at 64 px and on 64-px
windows of 128-px renders (L1 + L2 + L1 of the image differences, which keeps edges sharp). Decoding
a 64-px image costs ~6.5 ms instead of ~15 ms (1 thread), which keeps a 4-step student under a fifth
of the teacher's time; `diffcli distill` gives it to students of the bundled model (`--student-vae`).

    python -m diffcli.training.tiny_ae --minutes 45 [--steps N] [--resume]    # the shipped run: --minutes 45

Its scaling_factor is 1.0: the latents it reads and writes are already scaled, as pipelines expect.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from diffcli import loading
from diffcli.bundled import MODEL_DIR, TINY_AE_DIR
from diffcli.training.common import Budget, load_ckpt, render_batch, save_ckpt, to_float

OUT = TINY_AE_DIR
DECODER_CHANNELS = 48


def make_tiny_ae(decoder_channels: int = DECODER_CHANNELS):
    from diffusers import AutoencoderTiny

    return AutoencoderTiny(
        encoder_block_out_channels=(32, 32, 32),
        num_encoder_blocks=(1, 2, 2),
        decoder_block_out_channels=(decoder_channels,) * 3,
        num_decoder_blocks=(2, 2, 0),
        latent_channels=4,
        scaling_factor=1.0,
        shift_factor=0.0,
    )


def load_bundled_vae():
    from diffusers import AutoencoderKL

    return loading.from_pretrained(AutoencoderKL, str(MODEL_DIR / "vae"), torch_dtype=torch.float32).eval()


@torch.no_grad()
def teach(vae, x: torch.Tensor, gen: torch.Generator, noise: float = 0.1):
    """(input latents, decoder target, encoder target) for images X in [-1, 1]."""
    s = float(vae.config.scaling_factor)
    post = vae.encode(x).latent_dist
    z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
    off = (torch.rand(len(x), 1, 1, 1, generator=gen) < 0.5).float() * noise / s
    z = z + off * torch.randn(z.shape, generator=gen)
    return z * s, vae.decode(z).sample.clamp(-1, 1), post.mean * s


def edge_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between the images' horizontal and vertical differences: pixel losses alone settle for blur."""
    return F.l1_loss(a.diff(dim=-1), b.diff(dim=-1)) + F.l1_loss(a.diff(dim=-2), b.diff(dim=-2))


@torch.no_grad()
def psnr_vs_teacher(ae, vae, n: int = 128, seed: int = 4321, size: int = 64) -> dict:
    """PSNR (dB) of the tiny decoder against the bundled decoder, and of each round trip against the renders."""
    _, imgs = render_batch(random.Random(seed), n, size)
    x = to_float(imgs)
    s = float(vae.config.scaling_factor)
    z = vae.encode(x).latent_dist.mean
    big = vae.decode(z).sample.clamp(-1, 1)
    small = ae.decode(z * s).sample.clamp(-1, 1)
    small_rt = ae.decode(ae.encode(x).latents).sample.clamp(-1, 1)

    def psnr(a, b):
        return round(float(10 * torch.log10(4.0 / F.mse_loss(a, b))), 2)

    return {
        "decoder_vs_bundled_decoder": psnr(small, big),
        "bundled_round_trip": psnr(big, x),
        "tiny_round_trip": psnr(small_rt, x),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--ckpt", default=".ckpt/tiny-ae.pt")
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--steps", type=int, default=None, help="a step budget instead of --minutes (reproducible)")
    ap.add_argument("--decoder-channels", type=int, default=DECODER_CHANNELS)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--buffer", type=int, default=2048, help="64-px renders kept in memory (a quarter as many 128-px)")
    ap.add_argument("--psnr-n", type=int, default=128)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng, gen = random.Random(args.seed), torch.Generator().manual_seed(args.seed)
    vae, ae = load_bundled_vae().requires_grad_(False), make_tiny_ae(args.decoder_channels).train()
    opt = torch.optim.AdamW(ae.parameters(), lr=args.lr, betas=(0.9, 0.99))
    ck, step, elapsed = Path(args.ckpt), 0, 0.0
    if args.resume and ck.exists():
        st = load_ckpt(ck, rng, opt, model=ae)
        step, elapsed = st["step"], st["elapsed"]
    budget = Budget(args.steps, None if args.steps else args.minutes, elapsed)
    buf64, buf128 = render_batch(rng, args.buffer, 64)[1], render_batch(rng, max(1, args.buffer // 4), 128)[1]
    last = time.time()
    while not budget.done(step):
        lr = args.lr * min(1.0, (step + 1) / 100) * max(0.05, 1 - budget.progress(step))
        for g in opt.param_groups:
            g["lr"] = lr
        half = args.batch // 2
        i = torch.randint(0, len(buf128), (half,), generator=gen)
        ox, oy = (int(v) for v in torch.randint(0, 65, (2,), generator=gen))
        x = torch.cat(
            [buf64[torch.randint(0, len(buf64), (half,), generator=gen)], buf128[i][:, :, oy : oy + 64, ox : ox + 64]]
        )
        x = to_float(x)
        z, dec_target, enc_target = teach(vae, x, gen)
        dec = ae.decode(z).sample
        enc = ae.encode(x).latents
        loss = (
            F.l1_loss(dec, dec_target)
            + F.mse_loss(dec, dec_target)
            + edge_loss(dec, dec_target)
            + F.mse_loss(enc, enc_target)
        )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f} lr {lr:.2e} {budget.elapsed / 60:.1f} min", flush=True)
            k = min(64, len(buf128))  # refresh part of the buffers
            buf64[torch.randint(0, len(buf64), (k,), generator=gen)] = render_batch(rng, k, 64)[1]
            buf128[torch.randint(0, len(buf128), (k // 4,), generator=gen)] = render_batch(rng, k // 4, 128)[1]
        if time.time() - last > 120:
            last = time.time()
            save_ckpt(
                ck, model=ae.state_dict(), opt=opt.state_dict(), step=step, elapsed=budget.elapsed, rng=rng.getstate()
            )
    save_ckpt(ck, model=ae.state_dict(), opt=opt.state_dict(), step=step, elapsed=budget.elapsed, rng=rng.getstate())
    ae.eval()
    print("PSNR", psnr_vs_teacher(ae, vae, n=args.psnr_n), flush=True)
    from diffcli.output import swap_in_dir

    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    ae.to(torch.float16).save_pretrained(tmp, safe_serialization=True)
    for f in tmp.iterdir():
        f.chmod(0o644)
    swap_in_dir(tmp, out)
    print(f"exported {out} after {step} steps", flush=True)


if __name__ == "__main__":
    main()

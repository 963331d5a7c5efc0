"""Training recipe for the bundled ControlNet `tiny-control-seg`: object silhouette -> scene.

    python -m diffcli.training.controlnet --out diffcli/bundled/tiny-control-seg \
        --ckpt-dir .ckpt/control --minutes 60 [--resume]

A standard diffusers ``ControlNetModel`` made with ``ControlNetModel.from_unet`` from the bundled
model's UNet (which stays frozen, as do its VAE and text encoder). The conditioning image is the
object's silhouette, white on black, drawn by the renderer with the exact geometry of the scene
(``scenes.control_map``): it fixes the object's shape, size and place, and the prompt says the rest.

Data is rendered on the fly into an in-memory buffer of (scene, latent posterior, silhouette) that is
partly refreshed now and then. Checkpoints (ControlNet, EMA, optimizer, step, elapsed time, RNGs) go to
--ckpt-dir every few minutes, so --resume continues a run; fp16 weights of the EMA (no optimizer state)
are exported to --out now and then and at the end.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from diffcli.bundled import scenes
from diffcli.training import arch
from diffcli.training.common import (
    Budget,
    Chores,
    ThreadTuner,
    add_loop_args,
    add_recipe_args,
    load_ckpt,
    load_frozen_base,
    lr_at,
    optimizer_step,
    run_logged,
    sample_timesteps,
    save_ckpt,
    to_float,
)

# the latents are 1/4 of the image size: two stride-2 convs in the conditioning embedding
CONDITIONING_CHANNELS = (16, 32, 64)


def make_controlnet(unet):
    """A ControlNet for the bundled UNet: its encoder copied, zero convolutions, a 3-channel hint at 4x."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONDITIONING_CHANNELS)


def render_examples(rng: random.Random, n: int, size: int = 64):
    """n random scenes, their renders (uint8, n x 3 x s x s) and silhouettes (float, n x 1 x s x s)."""
    sc = [scenes.sample_scene(rng) for _ in range(n)]
    imgs = np.stack([np.asarray(scenes.render(s, size)) for s in sc])
    masks = np.stack([scenes.object_mask(s, size) for s in sc])[:, None]
    return sc, torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(masks)


class Buffer:
    """Scenes, VAE posteriors (mean, std) of their renders and their silhouettes."""

    def __init__(self, vae, rng: random.Random, n: int):
        self.vae, self.rng = vae, rng
        self.scenes, self.mean, self.std, self.mask = self._make(n)

    @torch.no_grad()
    def _make(self, n):
        sc, imgs, masks = render_examples(self.rng, n)
        means, stds = [], []
        for i in range(0, n, 64):
            d = self.vae.encode(to_float(imgs[i : i + 64])).latent_dist
            means.append(d.mean)
            stds.append(d.std)
        return sc, torch.cat(means), torch.cat(stds), masks.to(torch.float16)

    def refresh(self, k: int):
        sc, m, s, masks = self._make(k)
        idx = random.Random(self.rng.random()).sample(range(len(self.scenes)), k)
        for j, i in enumerate(idx):
            self.scenes[i] = sc[j]
        t = torch.tensor(idx)
        self.mean[t], self.std[t], self.mask[t] = m, s, masks

    def sample(self, bs: int):
        t = torch.tensor([self.rng.randrange(len(self.scenes)) for _ in range(bs)])
        z = self.mean[t] + self.std[t] * torch.randn_like(self.std[t])
        hint = self.mask[t].float().expand(-1, 3, -1, -1)  # white on black, in [0, 1] as the pipeline feeds it
        return [self.scenes[i] for i in t.tolist()], z, hint


def export_controlnet(controlnet, out_dir, meta: dict) -> Path:
    """fp16 weights in the standard diffusers ControlNetModel layout, swapped in whole."""
    import shutil

    from diffcli.output import swap_in_dir

    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    copy.deepcopy(controlnet).to("cpu", torch.float16).save_pretrained(tmp, safe_serialization=True)
    (tmp / "diffcli.json").write_text(json.dumps(meta, indent=2) + "\n")
    swap_in_dir(tmp, out)
    return out


def train(args, log):
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    vae, te, unet, tok = load_frozen_base(args.base)
    sf = vae.config.scaling_factor
    controlnet = make_controlnet(unet).train()
    ema = copy.deepcopy(controlnet).requires_grad_(False)
    opt = torch.optim.AdamW(controlnet.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    ck = Path(args.ckpt_dir) / "control.pt"
    step, elapsed = 0, 0.0
    if args.resume and ck.exists():
        st = load_ckpt(ck, rng, opt, controlnet=controlnet, ema=ema)
        step, elapsed = st["step"], st["elapsed"]
        log(f"control: resumed at step {step} ({elapsed / 60:.1f} min)")
    t0 = time.time()
    buf = Buffer(vae, rng, args.buffer)
    log(f"control: buffer of {args.buffer} rendered and encoded in {time.time() - t0:.0f}s")
    noise_sched = arch.make_scheduler("ddpm")  # the bundled model's training noise schedule
    acp = noise_sched.alphas_cumprod
    snr_all = acp / (1 - acp)
    budget = Budget(args.steps, args.minutes, elapsed)
    tuner = ThreadTuner(args.threads)
    meta = {
        "base_model": "tiny",
        "control": "seg",
        "conditioning": "object silhouette, white on black",
        "recipe": "python -m diffcli.training.controlnet",
    }

    def checkpoint():
        save_ckpt(
            ck,
            controlnet=controlnet.state_dict(),
            ema=ema.state_dict(),
            opt=opt.state_dict(),
            step=step,
            elapsed=budget.elapsed,
            rng=rng.getstate(),
            torch_rng=torch.get_rng_state(),
        )

    def export(final=False):
        export_controlnet(
            ema if step >= args.ema_start else controlnet,
            args.out,
            meta | {"steps": step, "minutes": round(budget.elapsed / 60, 1)},
        )
        log(f"control: exported {'final ' if final else ''}weights at step {step} to {args.out}")

    chores = Chores(
        "control", log, log_every=100, refresh=lambda: buf.refresh(len(buf.scenes) // 8),
        refresh_every=args.refresh_every, checkpoint=checkpoint, ckpt_minutes=args.ckpt_every, export=export,
        export_minutes=args.export_every,
    )  # fmt: skip
    while not budget.done(step):
        tuner.step()
        p = budget.progress(step)
        lr = lr_at(p, step, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        sc, z0, hint = buf.sample(args.batch)
        caps = ["" if rng.random() < args.cfg_drop else scenes.caption(s, rng, drop_prob=args.caption_drop) for s in sc]
        ids = tok(
            caps, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        z0 = z0 * sf
        noise = torch.randn_like(z0)
        t = sample_timesteps(
            args.batch, noise_sched.config.num_train_timesteps, args.high_t_frac, "cpu", args.high_t_start
        )
        zt = noise_sched.add_noise(z0, noise, t)
        target = noise_sched.get_velocity(z0, noise, t)
        snr = snr_all[t]
        w = (torch.clamp(snr, max=args.min_snr) + 1) / (snr + 1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            with torch.no_grad():
                emb = te(ids)[0]
            down, mid = controlnet(zt, t, emb, controlnet_cond=hint, return_dict=False)
            pred = unet(zt, t, emb, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        loss = (((pred.float() - target) ** 2).mean(dim=(1, 2, 3)) * w).mean()
        step = optimizer_step(loss, controlnet, opt, ema, step, args.ema_start, args.ema)
        chores.after(step, loss.item(), lr, budget, tuner)
    checkpoint()
    export(final=True)
    return step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_args(
        ap, out="diffcli/bundled/tiny-control-seg", base_help="the bundled model folder (its UNet stays frozen)",
        ckpt_dir=".ckpt/control", minutes=60.0, batch=16, buffer=2048, buffer_help="examples kept in memory",
        lr=5e-4, warmup=100,
    )  # fmt: skip
    ap.add_argument("--min-snr", type=float, default=5.0)
    ap.add_argument(
        "--high-t-frac",
        type=float,
        default=0.3,
        help="fraction of samples from the noisiest timesteps, where the layout is decided",
    )
    ap.add_argument("--high-t-start", type=float, default=0.7)
    ap.add_argument("--cfg-drop", type=float, default=0.1)
    ap.add_argument("--caption-drop", type=float, default=0.25)
    add_loop_args(ap, ema=0.995, refresh_every=500, ckpt_every=5.0)
    args = ap.parse_args(argv)

    run_logged(args, train)


if __name__ == "__main__":
    main()

"""Training recipe for the bundled InstructPix2Pix model `tiny-edit`: scene + instruction -> edited scene.

    python -m diffcli.training.edit --out diffcli/bundled/tiny-edit --ckpt-dir .ckpt/tiny-edit \
        --minutes 40 [--resume] [--threads 2]

It starts from the bundled model `tiny` (diffcli/bundled/tiny): its VAE, text encoder, tokenizer and
scheduler are kept as they are (frozen, copied into the export byte for byte); its UNet is widened from 4 to
8 input channels, the 4 new ones (the input image's latents) zero-initialised as InstructPix2Pix does, and
fine-tuned.

Data are exact edit pairs rendered by diffcli.bundled.scenes (``edit_pair``): a random scene and the same
scene with exactly one attribute changed (time of day, the object's colour, the ground, the object, its
position), both drawn with the same variation (seed, jitter), and an instruction naming the change
(``instruction``: several phrasings per attribute; the phrasings of ``HELD_OUT`` are never trained on, the
bench uses them). Objective: the scheduler's prediction type (v-prediction, zero terminal SNR) on the edited
image's scaled latents, given the input image's unscaled latent mode concatenated to the noisy latents (as
StableDiffusionInstructPix2PixPipeline feeds them) and the instruction; conditioning dropout as in
InstructPix2Pix (5 % no text, 5 % no image, 5 % neither) so both guidances work.

Checkpoints (UNet, EMA, optimizer, step, elapsed time, RNGs) go to --ckpt-dir every few minutes, so
--resume continues a run; fp16 weights of the EMA (no optimizer state) are exported to --out now and then
and at the end, as a standard StableDiffusionInstructPix2PixPipeline folder with a diffcli.json.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from diffcli import loading
from diffcli.bundled import scenes
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

EDIT_ATTRS = ("time", "color", "ground", "obj", "position")
# How often each attribute is the edited one: moving or replacing the object redraws part of the background
# and is learnt more slowly than recolouring.
ATTR_WEIGHTS = {"time": 0.17, "color": 0.17, "ground": 0.17, "obj": 0.23, "position": 0.26}
# The recommended settings shipped in diffcli.json (chosen with bench/edit_quality.py on scene seed 7: cfg 3 kept
# more of the input than 5, 7.5 or 10 at the same success; see docs/edit.md).
DEFAULTS = {
    "steps": 15,
    "cfg": 3.0,
    "image_cfg": 1.5,
    "scheduler": "dpm++2m",
    "width": 64,
    "height": 64,
    "family": "bundled-edit",
}

# Words naming a value in an instruction (every one a single token of the bundled tokenizer).
_WORDS = {
    "time": {
        "dawn": ["dawn", "sunrise", "morning", "daybreak"],
        "day": ["day", "daytime", "noon", "midday", "afternoon", "daylight"],
        "dusk": ["dusk", "sunset", "evening", "twilight", "sundown"],
        "night": ["night", "nighttime", "midnight"],
    },
    "ground": {
        "grass": ["grass", "grassy", "meadow", "field", "lawn"],
        "sand": ["sand", "sandy", "desert", "beach", "dunes"],
        "snow": ["snow", "snowy", "winter", "ice", "icy"],
        "sea": ["sea", "water", "ocean", "lake", "waves"],
    },
    "obj": {k: list(v) for k, v in scenes._O.items()},
    "color": {k: list(v) for k, v in scenes._C.items()},
    "position": {"left": ["left"], "center": ["center", "middle", "centre"], "right": ["right"]},
}
# Phrasings per attribute: {w} the new value's word, {o} a word for the (input's) object.
TEMPLATES = {
    "time": [
        "make it {w}",
        "{w}",
        "at {w}",
        "change it to {w}",
        "turn it to {w}",
        "make the sky {w}",
        "change the time to {w}",  # held out
        "it is {w} now",  # held out
    ],
    "color": [
        "turn the {o} {w}",
        "make the {o} {w}",
        "make it {w}",
        "a {w} {o}",
        "paint it {w}",
        "{w}",
        "paint the {o} {w}",  # held out
        "change the colour to {w}",  # held out
    ],
    "ground": [
        "{w} ground",
        "make the ground {w}",
        "on {w}",
        "put it on {w}",
        "change the ground to {w}",
        "{w}",
        "make it {w}",  # held out
        "the ground is {w} now",  # held out
    ],
    "obj": [
        "a {w} instead",
        "make it a {w}",
        "turn it into a {w}",
        "replace it with a {w}",
        "change the {o} to a {w}",
        "{w}",
        "a {w} instead of the {o}",  # held out
        "turn the {o} into a {w}",  # held out
    ],
    "position": [
        "move it to the {w}",
        "move it {w}",
        "put it on the {w}",
        "move the {o} to the {w}",
        "to the {w}",
        "on the {w}",
        "shift it to the {w}",  # held out
        "place the {o} on the {w}",  # held out
    ],
}
HELD_OUT = {a: set(t[-2:]) for a, t in TEMPLATES.items()}  # the bench's phrasings, never trained on


def _article(text: str) -> str:
    """'a oak' -> 'an oak'."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def instruction(attr: str, new: str, src: scenes.Scene, rng: random.Random, held_out: bool = False) -> str:
    """An instruction asking to change ATTR of SRC to NEW: a training phrasing, or with HELD_OUT one of the
    phrasings the recipe never trains on."""
    temps = [t for t in TEMPLATES[attr] if (t in HELD_OUT[attr]) == held_out]
    t = rng.choice(temps)
    if new == "center":
        t = t.replace("on the {w}", "in the {w}")
    return _article(t.format(w=rng.choice(_WORDS[attr][new]), o=rng.choice(_WORDS["obj"][src.obj])))


def edit_pair(
    rng: random.Random, attr: str | None = None, weights: dict | None = None
) -> tuple[scenes.Scene, scenes.Scene, str, str]:
    """(input scene, edited scene, attribute, new value): a random scene and the same scene (same seed and
    jitter) with exactly ATTR changed to another value (by default a random attribute, drawn with WEIGHTS:
    ATTR_WEIGHTS unless given)."""
    weights = weights or ATTR_WEIGHTS
    attr = attr or rng.choices(EDIT_ATTRS, [weights[a] for a in EDIT_ATTRS])[0]
    src = scenes.sample_scene(rng)
    new = rng.choice([v for v in scenes.VALUES[attr] if v != getattr(src, attr)])
    return src, dataclasses.replace(src, **{attr: new}), attr, new


def _encode_images(vae, imgs: torch.Tensor, bs: int = 64):
    """Posterior mean and std (unscaled) of uint8 images (n, 3, h, w)."""
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(imgs), bs):
            d = vae.encode(to_float(imgs[i : i + bs])).latent_dist
            means.append(d.mean)
            stds.append(d.std)
    return torch.cat(means), torch.cat(stds)


class PairBuffer:
    """Edit pairs: scenes, the input's latent mode, the edited image's posterior (mean, std)."""

    def __init__(self, vae, rng: random.Random, n: int, weights: dict | None = None):
        self.vae, self.rng, self.weights = vae, rng, weights
        self.pairs, self.src, self.mean, self.std = self._make(n)

    def _make(self, n):
        pairs = [edit_pair(self.rng, weights=self.weights) for _ in range(n)]
        a = np.stack([np.asarray(scenes.render(p[0], 64)) for p in pairs])
        b = np.stack([np.asarray(scenes.render(p[1], 64)) for p in pairs])
        to_t = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        src, _ = _encode_images(self.vae, to_t(a))
        mean, std = _encode_images(self.vae, to_t(b))
        return pairs, src, mean, std

    def refresh(self, k: int):
        pairs, src, mean, std = self._make(k)
        idx = random.Random(self.rng.random()).sample(range(len(self.pairs)), k)
        for j, i in enumerate(idx):
            self.pairs[i] = pairs[j]
        t = torch.tensor(idx)
        self.src[t], self.mean[t], self.std[t] = src, mean, std

    def sample(self, bs: int):
        t = torch.tensor([self.rng.randrange(len(self.pairs)) for _ in range(bs)])
        z = self.mean[t] + self.std[t] * torch.randn_like(self.std[t])
        return [self.pairs[i] for i in t.tolist()], self.src[t], z


def widen_unet(unet, extra: int = 4):
    """The UNet with EXTRA more input channels, their conv_in weights zero (InstructPix2Pix's init)."""
    from diffusers import UNet2DConditionModel

    cfg = dict(unet.config)
    cfg["in_channels"] = unet.config.in_channels + extra
    wide = UNet2DConditionModel.from_config(cfg)
    sd = unet.state_dict()
    w = sd["conv_in.weight"]
    sd["conv_in.weight"] = torch.cat([w, torch.zeros(w.shape[0], extra, *w.shape[2:], dtype=w.dtype)], dim=1)
    wide.load_state_dict(sd)
    return wide


def export_edit_pipeline(out_dir, base_dir, unet, defaults: dict) -> Path:
    """The fp16 StableDiffusionInstructPix2PixPipeline folder: UNet from UNET, every other component copied
    from BASE_DIR byte for byte; swapped in whole."""
    from diffcli.output import swap_in_dir

    out, base = Path(out_dir), Path(base_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for part in ("vae", "text_encoder", "tokenizer", "scheduler"):
        shutil.copytree(base / part, tmp / part)
    copy.deepcopy(unet).to("cpu", torch.float16).eval().save_pretrained(tmp / "unet", safe_serialization=True)
    index = json.loads((base / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionInstructPix2PixPipeline"
    index.pop("image_encoder", None)  # not an argument of the IP2P pipeline
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (tmp / "diffcli.json").write_text(json.dumps(defaults, indent=2) + "\n")
    for f in tmp.rglob("*"):  # readable by all, as shipped in a package
        f.chmod(0o755 if f.is_dir() else 0o644)
    swap_in_dir(tmp, out)
    return out


def train(args, log):
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    vae, te, base_unet, tok = load_frozen_base(args.base)
    from diffusers import DDPMScheduler

    # the training noise schedule of the shipped scheduler (betas, zero terminal SNR, prediction type)
    noise_sched = loading.from_pretrained(DDPMScheduler, Path(args.base) / "scheduler")
    pred_type = noise_sched.config.prediction_type
    log(f"edit: noise schedule {dict(prediction_type=pred_type, zsnr=noise_sched.config.rescale_betas_zero_snr)}")
    sf = vae.config.scaling_factor
    unet = widen_unet(base_unet).train()
    del base_unet
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    ck = Path(args.ckpt_dir) / "edit.pt"
    step, elapsed = 0, 0.0
    if args.resume and ck.exists():
        st = load_ckpt(ck, rng, opt, unet=unet, ema=ema)
        step, elapsed = st["step"], st["elapsed"]
        log(f"edit: resumed at step {step} ({elapsed / 60:.1f} min)")
    t0 = time.time()
    buf = PairBuffer(vae, rng, args.buffer, args.weights)
    log(f"edit: {args.buffer} pairs rendered and encoded in {time.time() - t0:.0f}s")
    acp = noise_sched.alphas_cumprod
    snr_all = acp / (1 - acp)
    emb_cache: dict[str, torch.Tensor] = {}

    def embed(texts):
        missing = [t for t in dict.fromkeys(texts) if t not in emb_cache]
        if missing:
            ids = tok(
                missing, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
            ).input_ids
            with torch.no_grad():
                e = te(ids)[0]
            emb_cache.update(zip(missing, e))
        return torch.stack([emb_cache[t] for t in texts])

    budget = Budget(args.steps, args.minutes, elapsed)
    tuner = ThreadTuner(args.threads)

    def checkpoint():
        save_ckpt(
            ck,
            unet=unet.state_dict(),
            ema=ema.state_dict(),
            opt=opt.state_dict(),
            step=step,
            elapsed=budget.elapsed,
            rng=rng.getstate(),
            torch_rng=torch.get_rng_state(),
        )

    def export(final=False):
        export_edit_pipeline(args.out, args.base, ema if step >= args.ema_start else unet, DEFAULTS)
        log(f"edit: exported {'final ' if final else ''}weights at step {step} to {args.out}")

    chores = Chores(
        "edit", log, log_every=50, refresh=lambda: buf.refresh(len(buf.pairs) // 8), refresh_every=args.refresh_every,
        checkpoint=checkpoint, ckpt_minutes=args.ckpt_every, export=export, export_minutes=args.export_every,
    )  # fmt: skip
    while not budget.done(step):
        tuner.step()
        p = budget.progress(step)
        lr = lr_at(p, step, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        pairs, zsrc, z0 = buf.sample(args.batch)
        r = torch.rand(args.batch)
        drop_text = (r < args.drop) | ((r >= 2 * args.drop) & (r < 3 * args.drop))
        drop_image = r >= args.drop
        drop_image &= r < 3 * args.drop
        texts = ["" if drop_text[i] else instruction(a, new, src, rng) for i, (src, _, a, new) in enumerate(pairs)]
        emb = embed(texts)
        zsrc = zsrc * (~drop_image).float()[:, None, None, None]  # unscaled mode, as the IP2P pipeline feeds it
        z0 = z0 * sf
        noise = torch.randn_like(z0)
        t = sample_timesteps(
            args.batch, noise_sched.config.num_train_timesteps, args.high_t_frac, "cpu", args.high_t_start
        )
        zt = noise_sched.add_noise(z0, noise, t)
        target = noise_sched.get_velocity(z0, noise, t) if pred_type == "v_prediction" else noise
        snr = snr_all[t]
        w = (torch.clamp(snr, max=args.min_snr) + 1) / (snr + 1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            pred = unet(torch.cat([zt, zsrc], dim=1), t, emb).sample
        loss = (((pred.float() - target) ** 2).mean(dim=(1, 2, 3)) * w).mean()
        step = optimizer_step(loss, unet, opt, ema, step, args.ema_start, args.ema)
        chores.after(step, loss.item(), lr, budget, tuner)
    checkpoint()
    export(final=True)
    return step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_args(
        ap, out="diffcli/bundled/tiny-edit", base_help="the bundled model folder it starts from",
        ckpt_dir=".ckpt/tiny-edit", minutes=40.0, batch=32, buffer=2048, buffer_help="edit pairs kept in memory",
        lr=3e-4, warmup=100,
    )  # fmt: skip
    ap.add_argument("--min-snr", type=float, default=5.0)
    ap.add_argument("--drop", type=float, default=0.05, help="conditioning dropout: text, image and both, each")
    ap.add_argument("--high-t-frac", type=float, default=0.2, help="fraction of samples from the noisiest steps")
    ap.add_argument("--high-t-start", type=float, default=0.8)
    add_loop_args(ap, ema=0.998, refresh_every=250, ckpt_every=4.0)
    ap.add_argument(
        "--attr-weights",
        default="",
        help="how often each attribute is the edited one, e.g. obj=0.32,position=0.26 (others as ATTR_WEIGHTS)",
    )
    args = ap.parse_args(argv)

    args.weights = weights = dict(ATTR_WEIGHTS)
    for item in filter(None, args.attr_weights.split(",")):
        name, _, value = item.partition("=")
        if name not in ATTR_WEIGHTS:
            ap.error(f"--attr-weights: unknown attribute {name!r} (one of {', '.join(EDIT_ATTRS)})")
        try:
            weights[name] = float(value)
        except ValueError:
            ap.error(f"--attr-weights: {name}={value!r} is not a number")
    run_logged(args, train)


if __name__ == "__main__":
    main()

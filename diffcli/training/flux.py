"""Training recipe for the bundled flow-matching transformer `tiny-flux`: a FLUX.1-architecture model of the
bundled scenes.

    python -m diffcli.training.flux --out diffcli/bundled/tiny-flux --ckpt-dir .ckpt/tiny-flux \
        --minutes 60 [--resume] [--threads 2]

It starts from the bundled model `tiny` (diffcli/bundled/tiny): its VAE (f/4, 4 latent channels; the export's
config gets the measured latent mean as `shift_factor` and 1/std as `scaling_factor`, as FLUX's VAE has),
its CLIP text encoder and tokenizer (FLUX's pooled CLIP input) are kept frozen and copied into the export. New
and trained together from scratch: a FluxTransformer2DModel (2 double-stream and 4 single-stream blocks, 192
wide, 2x2 latent patches packed into tokens as FLUX.1's pipelines pack them, RoPE over the token grid, no
guidance embedding) and a small T5 encoder (FLUX's second text encoder) over a unigram tokenizer of the domain
words, read at max_sequence_length 32.

Objective: rectified flow as FLUX.1 was trained: x_t = (1 - s) x0 + s noise, the transformer predicts noise -
x0 at timestep s; s drawn logit-normally (plus a share from the noisiest tenth, where the layout is decided),
then shifted as FluxPipeline shifts its sigmas at 64x64 (dynamic shifting, mu from 64 image tokens). Captions
are dropped (empty prompt) 10 % of the time, so true classifier-free guidance works: the family
(diffcli.families.bundled, "bundled-flux") takes --cfg as FluxPipeline's true_cfg_scale with a default negative
prompt " ".

Checkpoints (transformer, T5, their EMA, optimizer, step, elapsed time, RNGs, latent statistics) go to
--ckpt-dir every few minutes, so --resume continues a run; fp16 weights of the EMA (no optimizer state) are
exported to --out now and then and at the end, as a standard FluxPipeline folder with a diffcli.json.
Plain diffusers runs it with `FluxPipeline.from_pretrained(dir)(prompt, height=64, width=64,
max_sequence_length=32, negative_prompt=" ", true_cfg_scale=...)`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import random
import shutil
import string
from pathlib import Path

import numpy as np
import torch

from diffcli.bundled import scenes
from diffcli.bundled.vocab import DOMAIN_WORDS
from diffcli.training.bundled import LatentBuffer
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
    save_ckpt,
)
from diffcli.training.export import load_in_float32_by_default

MAX_SEQUENCE_LENGTH = 32  # T5 tokens read (the pipeline's max_sequence_length; the family passes it)
# The recommended settings shipped in diffcli.json (measured with bench/bundled_quality.py; docs/bundled-model.md)
DEFAULTS = {
    "steps": 20,
    "cfg": 4.0,
    "negative": " ",
    "scheduler": "flow-euler",
    "width": 64,
    "height": 64,
    "family": "bundled-flux",
}
# FLUX.1 [dev]'s scheduler: flow matching with resolution-dependent (dynamic) shifting
SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}


def build_t5_tokenizer(out_dir):
    """A T5 (unigram) tokenizer in which every domain word is one piece; other text goes letter by letter."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    vocab += [("▁" + w, -1.0) for w in DOMAIN_WORDS]
    vocab += [(c, -4.0) for c in string.ascii_lowercase + string.digits + string.punctuation]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=MAX_SEQUENCE_LENGTH)
    tok.save_pretrained(out_dir)
    return tok


def make_t5(vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(
        vocab_size=vocab_size, d_model=128, d_kv=32, d_ff=512, num_layers=2, num_heads=4,
        relative_attention_num_buckets=16, relative_attention_max_distance=32, feed_forward_proj="gated-gelu",
        dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    return T5EncoderModel(cfg)


def make_transformer(pooled_dim: int, text_dim: int = 128):
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=2, num_single_layers=4, attention_head_dim=32,
        num_attention_heads=6, joint_attention_dim=text_dim, pooled_projection_dim=pooled_dim,
        guidance_embeds=False, axes_dims_rope=(8, 12, 12),
    )  # fmt: skip


def flux_mu(tokens: int) -> float:
    """FluxPipeline's shift exponent for an image of TOKENS packed tokens, from SCHEDULER's settings."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    s = SCHEDULER
    return calculate_shift(tokens, s["base_image_seq_len"], s["max_image_seq_len"], s["base_shift"], s["max_shift"])


def sample_sigmas(n: int, mu: float, high_frac: float) -> torch.Tensor:
    """Training noise levels: logit-normal u (a HIGH_FRAC share from [0.9, 1)), shifted by exp(MU) as the
    pipeline shifts its sigmas."""
    u = torch.sigmoid(torch.randn(n))
    high = torch.rand(n) < high_frac
    u[high] = 0.9 + 0.1 * torch.rand(int(high.sum()))
    return math.exp(mu) / (math.exp(mu) + (1 / u.clamp(1e-4, 1) - 1))


def export_flux_pipeline(out_dir, base_dir, transformer, t5, t5_tok_dir, latent_stats: dict, defaults: dict) -> Path:
    """The fp16 FluxPipeline folder: TRANSFORMER and T5 (text_encoder_2) with the tokenizer at T5_TOK_DIR; the
    VAE, CLIP text encoder and tokenizer copied from BASE_DIR byte for byte (the VAE's config with
    LATENT_STATS: shift_factor, scaling_factor); swapped in whole."""
    from diffcli.output import swap_in_dir

    out, base = Path(out_dir), Path(base_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for part in ("vae", "text_encoder", "tokenizer"):
        shutil.copytree(base / part, tmp / part)
    shutil.copytree(t5_tok_dir, tmp / "tokenizer_2")
    vae_cfg = json.loads((tmp / "vae" / "config.json").read_text())
    vae_cfg.update(latent_stats)
    (tmp / "vae" / "config.json").write_text(json.dumps(vae_cfg, indent=2, sort_keys=True) + "\n")
    from diffusers import FlowMatchEulerDiscreteScheduler

    FlowMatchEulerDiscreteScheduler(**SCHEDULER).save_pretrained(tmp / "scheduler")
    copy.deepcopy(transformer).to("cpu", torch.float16).eval().save_pretrained(tmp / "transformer")
    copy.deepcopy(t5).to("cpu", torch.float16).eval().save_pretrained(tmp / "text_encoder_2")
    load_in_float32_by_default(tmp)
    index = {
        "_class_name": "FluxPipeline",
        "_diffusers_version": json.loads((base / "model_index.json").read_text())["_diffusers_version"],
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "FluxTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (tmp / "diffcli.json").write_text(json.dumps(defaults, indent=2) + "\n")
    for f in tmp.rglob("*"):  # readable by all, as shipped in a package
        f.chmod(0o755 if f.is_dir() else 0o644)
    swap_in_dir(tmp, out)
    return out


class Packer:
    """FluxPipeline's own packing of (B, C, H, W) latents into 2x2-patch tokens, and the tokens' position ids."""

    def __init__(self, channels: int, side: int):
        from diffusers import FluxPipeline

        self.pack, self.c, self.side = FluxPipeline._pack_latents, channels, side
        self.img_ids = FluxPipeline._prepare_latent_image_ids(1, side // 2, side // 2, "cpu", torch.float32)
        self.txt_ids = torch.zeros(MAX_SEQUENCE_LENGTH, 3)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.pack(z, z.shape[0], self.c, self.side, self.side)


class Stack(torch.nn.Module):
    """The trained modules as one (one optimizer, one EMA, one gradient clip)."""

    def __init__(self, transformer, t5):
        super().__init__()
        self.transformer, self.t5 = transformer, t5


def train(args, log):
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    vae, clip, unet, clip_tok = load_frozen_base(args.base)
    del unet
    tok_dir = Path(args.ckpt_dir) / "tokenizer_2"
    t5_tok = build_t5_tokenizer(tok_dir)
    model = Stack(make_transformer(clip.config.hidden_size), make_t5(len(t5_tok))).train()
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    n_params = sum(p.numel() for p in model.transformer.parameters()) / 1e6
    log(
        f"flux: transformer {n_params:.2f} M parameters, T5 {sum(p.numel() for p in model.t5.parameters()) / 1e6:.2f} M"
    )
    ck = Path(args.ckpt_dir) / "flux.pt"
    step, elapsed, stats = 0, 0.0, None
    if args.resume and ck.exists():
        st = load_ckpt(ck, rng, opt, model=model, ema=ema)
        step, elapsed, stats = st["step"], st["elapsed"], st["latent_stats"]
        log(f"flux: resumed at step {step} ({elapsed / 60:.1f} min)")
    buf = LatentBuffer(vae, rng, args.buffer, "cpu", contextlib.nullcontext)  # the bundled recipe's
    if stats is None:  # measured once, on the first buffer: FLUX's VAE config keeps both
        z = buf.mean + buf.std * torch.randn_like(buf.std)
        shift = float(z.mean())
        stats = {"shift_factor": round(shift, 5), "scaling_factor": round(1.0 / float((z - shift).std()), 5)}
    log(f"flux: latent statistics {stats}")
    shift, scale = stats["shift_factor"], stats["scaling_factor"]
    side = buf.mean.shape[-1]
    pack = Packer(buf.mean.shape[1], side)
    mu = flux_mu((side // 2) ** 2)
    pooled_cache: dict[str, torch.Tensor] = {}

    def pooled(texts):
        missing = [t for t in dict.fromkeys(texts) if t not in pooled_cache]
        if missing:
            ids = clip_tok(missing, padding="max_length", max_length=clip_tok.model_max_length, truncation=True,
                           return_tensors="pt").input_ids  # fmt: skip
            with torch.no_grad():
                pooled_cache.update(zip(missing, clip(ids).pooler_output))
        return torch.stack([pooled_cache[t] for t in texts])

    def t5_ids(texts):
        return t5_tok(texts, padding="max_length", max_length=MAX_SEQUENCE_LENGTH, truncation=True,
                      return_tensors="pt").input_ids  # fmt: skip

    budget = Budget(args.steps, args.minutes, elapsed)
    tuner = ThreadTuner(args.threads)

    def checkpoint():
        save_ckpt(
            ck, model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(), step=step,
            elapsed=budget.elapsed, rng=rng.getstate(), torch_rng=torch.get_rng_state(), latent_stats=stats,
        )  # fmt: skip

    def export(final=False):
        src = ema if step >= args.ema_start else model
        export_flux_pipeline(args.out, args.base, src.transformer, src.t5, tok_dir, stats, DEFAULTS)
        log(f"flux: exported {'final ' if final else ''}weights at step {step} to {args.out}")

    chores = Chores(
        "flux", log, log_every=50, refresh=lambda: buf.refresh(len(buf.scenes) // 8), refresh_every=args.refresh_every,
        checkpoint=checkpoint, ckpt_minutes=args.ckpt_every, export=export, export_minutes=args.export_every,
    )  # fmt: skip
    while not budget.done(step):
        tuner.step()
        lr = lr_at(budget.progress(step), step, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        sc, z = buf.sample(args.batch)
        texts = ["" if rng.random() < args.drop else scenes.caption(s, rng) for s in sc]
        x0 = pack((z - shift) * scale)
        noise = torch.randn_like(x0)
        s = sample_sigmas(args.batch, mu, args.high_t_frac)
        xt = (1 - s[:, None, None]) * x0 + s[:, None, None] * noise
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            emb = model.t5(t5_ids(texts))[0]
            pred = model.transformer(
                hidden_states=xt, timestep=s, pooled_projections=pooled(texts), encoder_hidden_states=emb,
                txt_ids=pack.txt_ids, img_ids=pack.img_ids, return_dict=False,
            )[0]  # fmt: skip
        loss = torch.nn.functional.mse_loss(pred.float(), noise - x0)
        step = optimizer_step(loss, model, opt, ema, step, args.ema_start, args.ema)
        chores.after(step, loss.item(), lr, budget, tuner)
    checkpoint()
    export(final=True)
    return step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_args(
        ap, out="diffcli/bundled/tiny-flux", base_help="the bundled model folder whose VAE and CLIP it keeps",
        ckpt_dir=".ckpt/tiny-flux", minutes=60.0, batch=32, buffer=4096, buffer_help="scenes kept in memory",
        lr=5e-4, warmup=200,
    )  # fmt: skip
    ap.add_argument("--drop", type=float, default=0.1, help="share of empty captions (for classifier-free guidance)")
    ap.add_argument("--high-t-frac", type=float, default=0.15, help="share of noise levels from the noisiest tenth")
    add_loop_args(ap, ema=0.999, refresh_every=200, ckpt_every=4.0)
    run_logged(ap.parse_args(argv), train)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

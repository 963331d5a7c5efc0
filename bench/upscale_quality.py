"""Upscale quality against the truth: render a held-out scene small and large with the bundled
renderer, upscale the small one, compare with the large one.

Prints, per (input size, scale) and method, the mean over N scenes of PSNR (dB, RGB), SSIM (luma,
11x11 Gaussian) and edge sharpness (Sobel gradient on the truth's strongest 10% edges, relative to the
truth: 1.0 = as sharp), the share of scenes where the method beats lanczos on PSNR, and seconds per
output megapixel (model load excluded; this CPU, --threads torch threads). The --fidelity variants of
one (scene, strength) reuse the same model tiles (same seeds and inputs, so the same pixels as separate
runs); each variant's time counts the model time once plus its own post-processing.

    python bench/upscale_quality.py                 # bundled model, 50 scenes; x2: 32->64, 64->128; x4: 16->64, 32->128
    python bench/upscale_quality.py --n 50 --pairs 32x2,32x4 --strengths 0.2,0.3 --model tiny
    python bench/upscale_quality.py --upscaler PATH # also a dedicated x2/x4 upscaler model (method model)

Methods: lanczos (the baseline), bicubic (reference), lanczos-backproject (no model: the tile engine with
lanczos tiles and --fidelity backproject, to separate what back-projection alone gives), tiled (the bundled or
--model text-to-image model, prompt = the scene's full caption, as recorded in images diffcli made), model
(with --upscaler).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HELD_OUT_SEED = 31_337_000  # scenes i = sample_scene(HELD_OUT_SEED + i); training draws from its own RNG streams


def parse_pairs(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        size, scale = item.lower().split("x")
        out.append((int(size), int(scale)))
    return out


class Runner:
    """Loads each model once; upscales through diffcli's own planning and tile engine."""

    def __init__(self, tmp: Path, device: str, dtype: str):
        self.tmp, self.device, self.dtype = tmp, device, dtype
        self.pipes: dict = {}
        self.cache: dict = {}  # (cache key, tile index) -> (model output, seconds): fidelity variants share it

    def run(
        self,
        src: Path,
        scale: int,
        method: str,
        model: str | None,
        prompt: str,
        strength: float | None,
        steps: int | None,
        seed: int,
        tile: int | None,
        fidelity: str | None = None,
        cfg: float | None = None,
        identity: bool = False,
        cache_key=None,
    ):
        from diffcli.jobs import Job
        from diffcli.progress import Reporter
        from diffcli.upscale.task import lanczos, run_tiles

        job = Job(
            task="upscale",
            image=str(src),
            scale=scale,
            method=method,
            model=model,
            prompt=prompt,
            strength=strength,
            steps=steps,
            seed=seed,
            device=self.device,
            dtype=self.dtype,
            tile_size=tile,
            fidelity=fidelity,
            cfg=cfg,
        )
        prepared = self._settle(job)
        plan = prepared.plan
        if plan.method == "lanczos":
            t0 = time.perf_counter()
            return lanczos(plan.source, scale), time.perf_counter() - t0
        if identity:  # the tile engine without the model: lanczos tiles (+ --fidelity post-processing)
            import numpy as np

            t0 = time.perf_counter()
            image = run_tiles(None, plan, Reporter(), process=lambda t, img, g, tick: np.asarray(img, np.float32) / 255)
            return image, time.perf_counter() - t0
        from diffcli.upscale.task import call_pipeline

        pipe = self._pipe(prepared)
        ran = [0.0]  # model seconds actually spent in this call

        def process(tile, img, gen, tick):
            key = (cache_key, tile.index)
            if key not in self.cache:
                t = time.perf_counter()
                self.cache[key] = (call_pipeline(pipe, plan, img, gen, tick), time.perf_counter() - t)
                ran[0] += self.cache[key][1]
            return self.cache[key][0]

        t0 = time.perf_counter()
        image = run_tiles(pipe, plan, Reporter(), process=process)
        elapsed = time.perf_counter() - t0
        model_s = sum(self.cache[(cache_key, t.index)][1] for t in plan.grid.tiles())
        if cache_key is None:
            self.cache.clear()
        return image, elapsed - ran[0] + model_s

    def vae_roundtrip(self, truth, model: str | None):
        """(oracle) The truth through the model's VAE (posterior mode): the ceiling of any method whose
        every pixel passes through this VAE (tiled without --fidelity, a latent upscaler)."""
        import numpy as np
        import torch

        from diffcli.jobs import Job

        src = self.tmp / "truth.png"
        truth.save(src)
        job = Job(
            task="upscale", image=str(src), scale=2, method="tiled", model=model, device=self.device, dtype=self.dtype
        )
        vae = self._pipe(self._settle(job)).vae
        x = torch.from_numpy(np.asarray(truth, np.float32) / 127.5 - 1).permute(2, 0, 1)[None].to(vae.dtype)
        t0 = time.perf_counter()
        with torch.no_grad():
            y = vae.decode(vae.encode(x).latent_dist.mode()).sample
        arr = ((y[0].permute(1, 2, 0).float().clamp(-1, 1) + 1) * 127.5 + 0.5).byte().numpy()
        from PIL import Image

        return Image.fromarray(arr, "RGB"), time.perf_counter() - t0

    def _settle(self, job):
        """JOB settled by the engine, as `diffcli upscale` settles it (nothing is written)."""
        from diffcli.progress import Reporter
        from diffcli.run import RunOptions, settle

        return settle(job, RunOptions(out=str(self.tmp / "never-written.png"), overwrite=True), Reporter())

    def _pipe(self, prepared):
        """The upscale's pipeline, loaded once, as the engine loads it (run.device_choice, run.load_options)."""
        key = (str(prepared.ref.path), prepared.plan.method, prepared.job.scheduler)
        if key not in self.pipes:
            from diffcli.pipelines import LoadOptions, load_base, set_scheduler
            from diffcli.run import device_choice, load_options
            from diffcli.upscale.task import pipeline

            load = load_options(prepared, LoadOptions())
            pipe = pipeline(load_base(prepared.ref, device_choice(prepared), load), prepared)
            set_scheduler(pipe, prepared.job.scheduler)
            self.pipes[key] = pipe
        return self.pipes[key]


def main() -> None:
    ap = argparse.ArgumentParser(description="upscale quality vs the true render")
    ap.add_argument("--n", type=int, default=50, help="held-out scenes")
    ap.add_argument("--pairs", default="32x2,64x2,16x4,32x4", help="input size x scale, comma separated")
    ap.add_argument("--model", default=None, help="text-to-image model for tiled (default: the bundled one)")
    ap.add_argument("--upscaler", default=None, help="a dedicated upscaler model for method 'model'")
    ap.add_argument("--strengths", default="0.3", help="tiled strengths to try, comma separated")
    ap.add_argument("--fidelities", default="none,lowpass,backproject", help="tiled/model --fidelity values to try")
    ap.add_argument("--steps", type=int, default=None, help="steps before strength (default: the model's)")
    ap.add_argument("--tile-size", type=int, default=None)
    ap.add_argument("--cfg", type=float, default=None, help="guidance (default: the model's)")
    ap.add_argument(
        "--methods",
        default="lanczos,bicubic,lanczos-backproject,oracle-vae,tiled",
        help="lanczos, bicubic, lanczos-backproject (no model: lanczos + back-projection), tiled,"
        " oracle-vae (the TRUTH through the model's VAE: a ceiling, not an upscaler)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--prompt", choices=["caption", "none"], default="caption")
    a = ap.parse_args()

    import torch
    from PIL import Image

    from diffcli.bundled import scenes
    from diffcli.upscale.quality import edge_sharpness, psnr, ssim

    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="upscale-quality-"))
    runner = Runner(tmp, "cpu", a.dtype)
    methods = a.methods.split(",") + (["model"] if a.upscaler else [])
    fixes = a.fidelities.split(",")
    variants = []  # (method, strength, fidelity)
    for m in methods:
        if m == "tiled":
            variants += [("tiled", float(s), f) for s in a.strengths.split(",") for f in fixes]
        elif m == "model":
            variants += [("model", None, f) for f in fixes]
        elif m == "lanczos-backproject":
            variants.append((m, None, "backproject"))
        else:
            variants.append((m, None, None))
    print(
        f"# upscale quality: {a.n} held-out scenes (seed {HELD_OUT_SEED}+i), model {a.model or 'tiny (bundled)'},"
        f" torch threads {a.threads}, dtype {a.dtype}, prompt {a.prompt}, steps {a.steps or 'default'},"
        f" cfg {a.cfg if a.cfg is not None else 'default'}"
    )
    for size, scale in parse_pairs(a.pairs):
        rows: dict = {v: {"psnr": [], "ssim": [], "edge": [], "sec": [], "mpx": 0.0} for v in variants}
        for i in range(a.n):
            scene = scenes.sample_scene(HELD_OUT_SEED + i)
            small, truth = scenes.render(scene, size), scenes.render(scene, size * scale)
            src = tmp / f"s{i}.png"
            small.save(src)
            runner.cache.clear()
            prompt = scenes.caption(scene, rng=i, drop_prob=0.0) if a.prompt == "caption" else ""
            for method, strength, fix in variants:
                if method == "bicubic":
                    t0 = time.perf_counter()
                    out = small.resize(truth.size, Image.BICUBIC)
                    sec = time.perf_counter() - t0
                elif method == "oracle-vae":
                    out, sec = runner.vae_roundtrip(truth, a.model)
                elif method == "lanczos-backproject":
                    out, sec = runner.run(
                        src,
                        scale,
                        "tiled",
                        a.model,
                        prompt,
                        None,
                        a.steps,
                        1000 + i,
                        a.tile_size,
                        fix,
                        a.cfg,
                        identity=True,
                    )
                else:
                    model = a.upscaler if method == "model" else a.model
                    out, sec = runner.run(
                        src,
                        scale,
                        method,
                        model,
                        prompt,
                        strength,
                        a.steps,
                        1000 + i,
                        a.tile_size,
                        fix,
                        a.cfg,
                        cache_key=(size, scale, i, method, strength),
                    )
                assert out.size == truth.size, (out.size, truth.size)
                r = rows[(method, strength, fix)]
                r["psnr"].append(psnr(out, truth))
                r["ssim"].append(ssim(out, truth))
                r["edge"].append(edge_sharpness(out, truth))
                r["sec"].append(sec)
                r["mpx"] += truth.width * truth.height / 1e6
        base = rows[("lanczos", None, None)]["psnr"] if ("lanczos", None, None) in rows else None
        print(f"\n## {size}x{size} -> {size * scale}x{size * scale} (x{scale})\n")
        print("| method | PSNR dB | SSIM | edge sharpness | beats lanczos (PSNR) | s / output Mpx |")
        print("|---|---|---|---|---|---|")
        for (method, strength, fix), r in rows.items():
            extra = ([f"strength {strength}"] if strength is not None else []) + (
                [f"fidelity {fix}"] if fix and method != "lanczos-backproject" else []
            )
            name = f"{method} ({', '.join(extra)})" if extra else method
            if method == "oracle-vae":
                name = "(oracle, not an upscaler) the truth through the VAE"
            wins = (
                "-"
                if base is None or method in ("lanczos", "oracle-vae")
                else f"{sum(p > b for p, b in zip(r['psnr'], base))}/{len(base)}"
            )
            spm = sum(r["sec"]) / r["mpx"] if r["mpx"] else float("nan")
            print(
                f"| {name} | {statistics.mean(r['psnr']):.2f} | {statistics.mean(r['ssim']):.4f} |"
                f" {statistics.mean(r['edge']):.3f} | {wins} | {spm:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

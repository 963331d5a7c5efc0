"""Step caching (`--cache`): reuse the UNet's deep features between denoising steps.

DeepCache (Ma, Fang, Wang 2023, "DeepCache: Accelerating Diffusion Models for Free", arXiv
2312.00858): the high-level features of a UNet change little from one step to the next, the
shallow ones do. So every N-th step (the first of each pipeline call included) runs the whole
UNet and keeps the feature entering the last layer (resnet + attention) of its last up block;
the N-1 steps in between run only conv_in, the time embedding, that last layer on the kept
feature concatenated with conv_in's fresh output (its skip connection), and conv_norm_out/conv_out:
the paper's shallowest branch, its code's default. `deepcache:N` runs the rest ceil(steps / N) times.
Measured on an SD-1.5-architecture UNet at 512² (CPU): a cached call costs 0.09 of a full one; the
coarser branch "block" (down_blocks[0] and the whole last up block run on every step) costs 0.45,
too much to reach a 1.8x speed-up at 25 steps.

diffusers (0.42) has no such cache for UNet2DConditionModel (its CacheMixin caches are for
transformers), and the `DeepCache` package wraps modules for good and finds the step by looking the
timestep up in the scheduler (wrong for Heun-type samplers, and its cached tensors keep the batch of
2 after --cfg-cutoff halves it). Here the UNet's own forward runs unchanged; for one pipeline call
only, the skipped modules' `forward` is replaced by one that, on a cached step, returns the cached
feature (the module that made it) or an empty placeholder (every other skipped module: their
outputs only feed each other). What that leaves out:

- ControlNet: its residual for conv_in's output applies on every step; the others apply on the full
  steps (they reach the output through the cached feature). The ControlNet itself still runs every
  step, so the speed-up is smaller.
- Classifier-free guidance that stops part-way (--cfg-cutoff): the batch halves to the conditional
  half; the cached feature keeps its conditional half, as diffcli.guidance does with every tensor.
- Any other change of batch or size runs a full step, which refreshes the cache.

Nothing stays on the UNet after the call (it is shared by every task pipeline of a loaded model,
by batch jobs and by `diffcli serve`): the next call without --cache runs the plain UNet.
Transformer denoisers (SD 3.x, FLUX.1) have no UNet branch to cache; `--cache deepcache` is refused
for them before the model loads.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

from diffcli.errors import UsageError

KINDS = ("none", "deepcache", "fbc", "taylorseer", "magcache")
MAX_INTERVAL = 100  # a full step every 100 steps is already one full step in most runs
# Transformer caches (diffusers' hooks, on for one pipeline call like DeepCache), their parameter and its
# default: diffusers' own (0.42), for families that measured none of their own (Family.cache_params: tiny-flux's,
# bench/cache_quality.py; docs/speed.md).
TRANSFORMER_CACHES = {
    "fbc": (
        "THRESHOLD",
        float,
        0.05,
    ),  # FirstBlockCacheConfig.threshold: reuse while the first block's change is below it
    "taylorseer": ("N", int, 5),  # TaylorSeerCacheConfig.cache_interval (lite variant): a full step every N
    "magcache": ("THRESHOLD", float, 0.06),  # MagCacheConfig.threshold: accumulated error allowed before a full step
}
TAYLORSEER_WARMUP = 3  # TaylorSeerCacheConfig.disable_cache_before_step: full steps first (diffusers' default)
USAGE = "use none, deepcache[:N], fbc[:THRESHOLD], taylorseer[:N] or magcache[:THRESHOLD]"


def parse(spec: str) -> tuple[str, int | float | None]:
    """(kind, parameter) of a `--cache` value: "none"; "deepcache[:N]" (N >= 2: steps between full UNet
    passes); "fbc[:THRESHOLD]", "taylorseer[:N]", "magcache[:THRESHOLD]" (transformers); the parameter None
    where not given (the default). Anything else is a usage error."""
    kind, sep, rest = str(spec).strip().partition(":")
    kind = kind.lower()
    if kind not in KINDS:
        raise UsageError(f"invalid --cache '{spec}'; {USAGE}")
    if kind == "none":
        if sep:
            raise UsageError(f"invalid --cache '{spec}'; 'none' takes no interval")
        return kind, None
    if not sep:
        return kind, None
    if kind in TRANSFORMER_CACHES:
        return kind, _transformer_parameter(spec, kind, rest)
    try:
        interval = int(rest)
    except ValueError:
        raise UsageError(f"invalid --cache '{spec}'; N in deepcache:N must be a whole number") from None
    if not 2 <= interval <= MAX_INTERVAL:
        raise UsageError(
            f"--cache deepcache:N needs N between 2 and {MAX_INTERVAL} (got {interval}); "
            f"N = 1 would be no cache: use --cache none"
        )
    return kind, interval


def _transformer_parameter(spec: str, kind: str, text: str) -> int | float:
    name, kind_type, _ = TRANSFORMER_CACHES[kind]
    try:
        value = kind_type(text)
    except ValueError:
        what = "a whole number" if kind_type is int else "a number"
        raise UsageError(f"invalid --cache '{spec}'; {name} in {kind}:{name} must be {what}") from None
    if kind_type is int and not 2 <= value <= MAX_INTERVAL:
        raise UsageError(f"--cache {kind}:{name} needs {name} between 2 and {MAX_INTERVAL} (got {value})")
    if kind_type is float and not 0 < value < 1:
        raise UsageError(f"--cache {kind}:{name} needs {name} between 0 and 1, both excluded (got {value:g})")
    return value


def settled(spec: str | None, default_interval: int, family_params: dict | None = None) -> str | None:
    """The recorded form of a `--cache` value: "none", or the kind with its parameter (the default filled in):
    "deepcache:N" (DEFAULT_INTERVAL), and for the transformer caches the model family's measured parameter
    (FAMILY_PARAMS, Family.cache_params) or diffusers' default: "fbc:0.05", "taylorseer:5", "magcache:0.06"."""
    if spec is None:
        return None
    kind, value = parse(spec)
    if kind == "none":
        return kind
    if value is None and kind in TRANSFORMER_CACHES:
        value = (family_params or {}).get(kind, TRANSFORMER_CACHES[kind][2])
    elif value is None:
        value = default_interval
    return f"{kind}:{value:g}" if isinstance(value, float) else f"{kind}:{value}"


def check(job, family: str | None, name: str) -> None:
    """A usage error, before loading, for a cache the model's family cannot take (its Family.options)."""
    from diffcli import families

    if job.cache in (None, "none"):
        return
    kind = parse(job.cache)[0]
    spec = families.get(family)
    if spec is not None and spec.takes(kind) and kind in TRANSFORMER_CACHES and (job.cfg_cutoff or 0) > 0:
        raise UsageError(
            f"--cache {kind} cannot run with --cfg-cutoff: stopping guidance halves the batch whose features "
            "diffusers' hooks keep; leave one of them out"
        )
    if spec is None or spec.takes(kind):
        return
    if kind == "deepcache":
        raise UsageError(
            f"--cache {job.cache} needs a UNet model (SD 1.x/2.x, SDXL); {name} has a {spec.denoiser} "
            "denoiser; leave --cache out (or --cache none)"
        )
    takers = sorted({f.label for f in families.families().values() if f.variant_of is None and f.takes(kind)})
    raise UsageError(
        f"--cache {kind} applies to {', '.join(takers) or 'no model family'} (a transformer diffusers can "
        f"cache); {name} is a {spec.label} model; leave --cache out (or --cache none)"
    )


@contextmanager
def active(pipe, spec: str | None, steps: int | None = None):
    """SPEC's cache on PIPE's denoiser for the calls made inside, removed on the way out. STEPS: the
    denoising steps the call runs (MagCache counts them)."""
    if spec in (None, "none"):
        yield None
        return
    kind, interval = parse(spec)
    if kind in TRANSFORMER_CACHES:
        with _transformer_cache(pipe, kind, interval, steps) as hooks:
            yield hooks
        return
    unet = getattr(pipe, "unet", None)
    if unet is None or len(getattr(unet, "up_blocks", ())) < 2 or not hasattr(unet, "down_blocks"):
        raise UsageError(
            f"--cache {spec} needs a UNet with up and down blocks; this model's denoiser is "
            f"{type(getattr(pipe, 'unet', None) or getattr(pipe, 'transformer', None)).__name__}"
        )
    from diffcli.limits import DEEPCACHE_INTERVAL

    cache = DeepCache(unet, interval or DEEPCACHE_INTERVAL)  # a settled spec names N; a bare one: the default
    cache.attach()
    try:
        yield cache
    finally:
        cache.detach()


@contextmanager
def _transformer_cache(pipe, kind: str, value, steps: int | None):
    """diffusers' cache hook KIND on PIPE's transformer for the calls made inside (its CacheMixin.enable_cache,
    or _hooked where it has none); removed on the way out, so the shared transformer runs uncached afterwards."""
    transformer = getattr(pipe, "transformer", None)
    if transformer is None:
        raise UsageError(
            f"--cache {kind} needs a transformer that diffusers can cache; this model's denoiser is "
            f"{type(getattr(pipe, 'unet', None)).__name__}"
        )
    config = _hook_config(pipe, kind, value, steps)
    if not hasattr(transformer, "enable_cache"):
        with _hooked(transformer, kind, config):
            yield transformer
        return
    transformer.enable_cache(config)
    try:
        yield transformer
    finally:
        transformer.disable_cache()


@contextmanager
def _hooked(transformer, kind: str, config):
    """TaylorSeer's hooks (CONFIG) on a TRANSFORMER without diffusers' CacheMixin (SD 3.x), applied as
    CacheMixin.enable_cache applies them, with the one cache context its pipelines do not set (they run both
    halves of classifier-free guidance in one batch, so one context for the whole call is what the hooks need);
    removed as CacheMixin.disable_cache removes them. diffusers' (0.42) other hooks fail on such models: the
    first-block cache on SD 3.x's last block (it returns no text stream) and on Z-Image's blocks (their forward
    names no hidden_states), so the families take only what works (Family.options)."""
    from diffusers import hooks
    from diffusers.hooks.hooks import CacheContext, _set_cache_context
    from diffusers.hooks.taylorseer_cache import _TAYLORSEER_CACHE_HOOK

    if kind != "taylorseer":
        raise UsageError(f"--cache {kind} needs a transformer with diffusers' cache support (FLUX.1, tiny-flux)")
    # the variant that predicts the attention outputs: the lite one fails on SD 3.x (a skipped block hands the
    # next one no text stream)
    hooks.apply_taylorseer_cache(transformer, dataclasses.replace(config, use_lite_mode=False))
    registry = hooks.HookRegistry.check_if_exists_or_initialize(transformer)
    registry.invalidate_child_registries_cache()
    _set_cache_context(transformer, CacheContext("inference"))
    try:
        yield
    finally:
        _set_cache_context(transformer, None)
        registry.remove_hook(_TAYLORSEER_CACHE_HOOK, recurse=True)


def _hook_config(pipe, kind: str, value, steps: int | None):
    """The diffusers hook config of cache KIND with its parameter VALUE (None: the default)."""
    value = TRANSFORMER_CACHES[kind][2] if value is None else value
    if kind == "fbc":
        from diffusers.hooks import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=value)
    if kind == "taylorseer":
        from diffusers.hooks import TaylorSeerCacheConfig

        # the lite variant: it predicts the transformer's output projection and skips every block on a cached
        # step; diffusers' default predicts the attention outputs only, and saved less at a lower quality on
        # tiny-flux (1.3-1.4x, FD ratio 1.14-1.31, against 1.7-2.4x and 1.01-1.05: docs/benchmarks.md)
        return TaylorSeerCacheConfig(
            cache_interval=value, disable_cache_before_step=TAYLORSEER_WARMUP, use_lite_mode=True
        )
    from diffusers.hooks import MagCacheConfig
    from diffusers.hooks import mag_cache as calibrations

    from diffcli import families

    family = families.family_of_pipe(pipe)
    if family is None or not family.mag_ratios:
        raise UsageError("--cache magcache needs a model whose magnitude ratios are known (FLUX.1, tiny-flux)")
    names = isinstance(family.mag_ratios, str)  # diffusers' calibration of it, else the family's own
    ratios = getattr(calibrations, family.mag_ratios) if names else list(family.mag_ratios)
    return MagCacheConfig(threshold=value, num_inference_steps=max(1, steps or len(ratios)), mag_ratios=ratios)


class DeepCache:
    """DeepCache on one UNet2DConditionModel for one pipeline call (see the module docstring).

    Args:
        unet: the UNet (diffusers' UNet2DConditionModel layout: down_blocks, mid_block, up_blocks).
        interval: N, the number of UNet calls between full ones (the first call is a full one).
        branch: what a cached call still runs besides conv_in, the time embedding and conv_out:
            "layer" (used): the last layer of the last up block only (the paper's shallowest branch,
            its code's default); "block": down_blocks[0] and the whole last up block.

    `full_calls` counts the UNet calls that ran the deep branch, `calls` all of them.
    """

    def __init__(self, unet, interval: int, branch: str = "layer") -> None:
        self.unet, self.interval, self.branch = unet, interval, branch
        self._down = 0
        self.calls = self.full_calls = 0
        self.skipping = False
        self.feature = None  # the output of up_blocks[-2] on the last full call
        self.res_counts: dict[int, int] = {}  # deep down block index -> its number of skip connections
        self._saved: list[tuple[object, object]] = []  # (module, its own instance `forward` or None)
        self._handle = None

    def skipped_modules(self) -> list[tuple[str, int, object, bool]]:
        """(role, index, module, keeps the feature) of every module a cached call leaves out."""
        unet = self.unet
        first = 0 if self.branch == "layer" else 1
        found = [("down", i, b, False) for i, b in enumerate(unet.down_blocks) if i >= first]
        if unet.mid_block is not None:
            found.append(("mid", 0, unet.mid_block, False))
        last = len(unet.up_blocks) - 1
        found += [("up", i, b, self.branch == "block" and i == last - 1) for i, b in enumerate(unet.up_blocks[:-1])]
        if self.branch == "layer":  # the last up block's layers but its last; the one before keeps the feature
            block = unet.up_blocks[-1]
            attentions = list(getattr(block, "attentions", None) or [])
            keeper = attentions[-2] if attentions else block.resnets[-2]
            found += [("resnet", i, m, m is keeper) for i, m in enumerate(block.resnets[:-1])]
            found += [("attn", i, m, m is keeper) for i, m in enumerate(attentions[:-1])]
        return found

    def attach(self) -> None:
        self._handle = self.unet.register_forward_pre_hook(self._before_call, with_kwargs=True)
        skipped = self.skipped_modules()
        self._down = sum(1 for role, *_ in skipped if role == "down")
        for role, index, module, keeps in skipped:
            self._saved.append((module, module.__dict__.get("forward")))
            module.forward = self._wrap(role, index, module.forward, keeps)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        for module, own in reversed(self._saved):
            if own is None:
                del module.forward  # the class's forward again
            else:
                module.forward = own
        self._saved.clear()
        self.feature = None

    def _before_call(self, module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample")
        due = self.calls % self.interval == 0
        self.calls += 1
        self.skipping = not due and self._fits(sample)
        if not self.skipping:
            self.full_calls += 1
            return None
        residuals = kwargs.get("down_block_additional_residuals")
        if self.branch != "layer" or residuals is None or kwargs.get("mid_block_additional_residual") is None:
            return None
        # a ControlNet's: conv_in's output is the one skip connection a cached call uses; the rest would
        # be added to placeholders and concatenated with them, so they become zeros of no size
        kwargs = {
            **kwargs,
            "down_block_additional_residuals": (residuals[0], *(r.new_zeros(()) for r in residuals[1:])),
            "mid_block_additional_residual": kwargs["mid_block_additional_residual"].new_zeros(()),
        }
        return args, kwargs

    def _fits(self, sample) -> bool:
        """Whether the cached feature can stand in on a call with SAMPLE (halving it to its conditional
        half when guidance has stopped)."""
        feature = self.feature
        if feature is None or sample is None:
            return False
        if feature.shape[0] == 2 * sample.shape[0]:
            self.feature = feature = feature.chunk(2)[-1]  # [unconditional, conditional] -> conditional
        return feature.shape[0] == sample.shape[0] and len(self.res_counts) == self._down

    def _wrap(self, role: str, index: int, forward, keeps_feature: bool):
        def cached_forward(*args, **kwargs):
            if not self.skipping:
                out = forward(*args, **kwargs)
                if role == "down":
                    self.res_counts[index] = len(out[1])
                if keeps_feature:
                    self.feature = out[0] if role == "attn" else out  # an attention layer returns (sample,)
                return out
            if keeps_feature:
                return (self.feature,) if role == "attn" else self.feature
            hidden = args[0] if args else kwargs.get("hidden_states")
            empty = hidden.new_zeros((1, 1))  # feeds only other skipped modules (concatenated, or a residual added)
            if role == "down":
                return empty, (empty,) * self.res_counts[index]
            return (empty,) if role == "attn" else empty

        return cached_forward

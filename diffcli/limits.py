"""Limits of a job, and the defaults that modules at several layers need. A leaf: imports nothing of diffcli."""

MAX_SEED = 2**32 - 1
MAX_STEPS = 1000  # no sampler takes more steps than a model's training schedule (1000 for SD-family models)
MAX_IMAGES = 10_000  # per command; `diffcli batch` spreads more over jobs
MAX_SIDE = 16_384  # pixels, either side
MAX_PIXELS_CAP = 4096 * 4096  # the default limit on pixels in one denoising batch, on a large machine
BYTES_PER_PIXEL = 1024  # rough peak memory of an SD-class generation per output pixel (fp32, SDPA)
DEEPCACHE_INTERVAL = 3  # `--cache deepcache` = deepcache:3, measured: docs/benchmarks.md

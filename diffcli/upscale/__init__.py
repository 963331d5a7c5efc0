"""`diffcli upscale`: diffusion super-resolution in bounded memory (see docs/upscale.md).

An upscale is a Job of task "upscale" run by the engine (diffcli.run) like every task: `task` is its task
module (settle its inputs, make its pipeline calls, compose its output), `rules` what its own fields may
hold, `tiles` the tile grid and blending. No torch at import time.
"""

"""1/W sweep engine: tokens per joule of LLM inference over design grids.

float64 is enabled once here, at import, before any JAX computation (toggling it around
jitted code has a bug history). float32 sweeps cast every input explicitly, so they stay
float32; see ``sweep.engine``.
"""

import jax

jax.config.update("jax_enable_x64", True)

from sweep.api import open, run  # noqa: E402, A004

__all__ = ["open", "run"]

"""1/W sweep engine: tokens per joule of LLM inference over design grids.

float64 is enabled once here, at import, before any JAX computation (toggling it around
jitted code has a bug history). float32 sweeps cast every input explicitly, so they stay
float32; see ``sweep.engine``.

The public API is functions: ``sweep.run``, ``sweep.open``, ``sweep.law``, ``sweep.grad``,
``sweep.fleet``, ``sweep.report``. (They share their modules' names; import a module's other
contents with ``from sweep.law_fit import ...``.)
"""

import jax

jax.config.update("jax_enable_x64", True)

from sweep.api import open, run  # noqa: E402, A004
from sweep.elasticity import grad  # noqa: E402
from sweep.fleet_sizing import fleet, fleet_grad  # noqa: E402
from sweep.html_report import report  # noqa: E402
from sweep.law_fit import law  # noqa: E402

__all__ = ["fleet", "fleet_grad", "grad", "law", "open", "report", "run"]

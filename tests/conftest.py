"""Test setup: float64 enabled once, before any JAX computation (as ``import sweep`` does)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

"""Request-length distributions as pure array maths: piecewise-linear CDFs and pool moments.

A workload is a piecewise-linear CDF of request length L (prompt + output tokens) on
breakpoints ``(tokens, cdf)``; a pool serves the lengths in ``(lo, hi]``. Everything here is
``jax.numpy``: it traces, vmaps and differentiates in ``x``, ``lo`` and ``hi``. Loading and
validating workloads (files, presets, parametric laws) is ``sweep.workload``.
"""

from typing import Any, NamedTuple

import jax.numpy as jnp


def cdf_at(tokens, cdf, x):
    """P(L <= x) for the piecewise-linear CDF on breakpoints ``(tokens, cdf)``.

    Linear interpolation between breakpoints; 0 below ``tokens[0]`` (where ``cdf[0] == 0``) and 1
    above ``tokens[-1]``. ``x`` may be any shape and may be traced; the derivative in ``x`` is the
    piecewise-constant density.
    """
    tokens = jnp.asarray(tokens)
    cdf = jnp.asarray(cdf)
    return jnp.interp(x, tokens, cdf, left=0.0, right=1.0)


def partial_moments(tokens, cdf, lo, hi):
    """Mass and raw moments of the lengths in ``(lo, hi]``, exact for the piecewise-linear CDF.

    On segment ``i``, ``[t_i, t_{i+1}]``, the density is constant,
    ``d_i = (c_{i+1} - c_i) / (t_{i+1} - t_i)``. The part of the segment inside the pool is
    ``[a_i, b_i]`` with ``a_i = clip(lo, t_i, t_{i+1})`` and ``b_i = max(a_i, clip(hi, t_i,
    t_{i+1}))`` (empty when the pool misses the segment or ``hi <= lo``). Then, with
    ``w_i = b_i - a_i``::

        mass   = sum_i d_i w_i                                   = F(hi) - F(lo)
        first  = sum_i d_i (b_i^2 - a_i^2) / 2 = sum_i d_i w_i (a_i + b_i) / 2        = int L dF
        second = sum_i d_i (b_i^3 - a_i^3) / 3 = sum_i d_i w_i (a_i^2 + a_i b_i + b_i^2) / 3
                                                                                     = int L^2 dF

    (the factored forms avoid cancellation in float32). Partial segments at ``lo`` and ``hi`` are
    handled exactly, so the three sums are continuous and piecewise-smooth in ``lo`` and ``hi``:
    ``d mass / d hi = density(hi)``, ``d first / d hi = hi density(hi)``,
    ``d second / d hi = hi^2 density(hi)`` (negated for ``lo``). ``lo`` and ``hi`` may be traced
    scalars (vmap for a batch). Returns ``(mass, first, second)`` in units (1, tokens, tokens^2).
    """
    tokens = jnp.asarray(tokens)
    cdf = jnp.asarray(cdf)
    t0, t1 = tokens[:-1], tokens[1:]
    density = (cdf[1:] - cdf[:-1]) / (t1 - t0)
    a = jnp.clip(lo, t0, t1)
    b = jnp.maximum(a, jnp.clip(hi, t0, t1))
    w = density * (b - a)
    mass = jnp.sum(w)
    first = jnp.sum(w * (a + b)) / 2
    second = jnp.sum(w * (a * a + a * b + b * b)) / 3
    return mass, first, second


class PoolStats(NamedTuple):
    """What the fleet code needs about the requests routed to a pool serving lengths (lo, hi].

    Conditional quantities are NaN where the pool gets no requests (``mass == 0``), with
    gradients kept finite.
    """

    mass: Any
    """P(lo < L <= hi): the pool's share of the request rate."""
    mean_tokens: Any
    """E[L | pool], prompt + output tokens."""
    mean_output_tokens: Any
    """E[output | pool] = output_share * E[L | pool]."""
    mean_prompt_tokens: Any
    """E[prompt | pool] = (1 - output_share) * E[L | pool]."""
    second_moment_tokens: Any
    """E[L^2 | pool], tokens^2 (output: times output_share^2)."""
    scv: Any
    """Var[L | pool] / E[L | pool]^2: the same for total, output and prompt tokens."""


def pool_stats(tokens, cdf, output_share, lo, hi) -> PoolStats:
    """:class:`PoolStats` for the lengths in ``(lo, hi]`` from :func:`partial_moments`."""
    mass, first, second = partial_moments(tokens, cdf, lo, hi)
    has = mass > 0
    safe_mass = jnp.where(has, mass, 1.0)
    safe_first = jnp.where(has, first, 1.0)
    mean = jnp.where(has, first / safe_mass, jnp.nan)
    e2 = jnp.where(has, second / safe_mass, jnp.nan)
    scv = jnp.where(has, second * safe_mass / (safe_first * safe_first) - 1.0, jnp.nan)
    return PoolStats(mass, mean, output_share * mean, (1.0 - output_share) * mean, e2, scv)

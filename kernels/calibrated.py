"""Calibrated-profile mode (MODEL.md section 1): reproduces the 1/W Law paper's headline.

A calibrated profile holds measured constants of one (GPU, model, tp) deployment
(inference-fleet-sim, arXiv 2603.16054):

    n_max(W) = min(floor(max_slots * calib_ctx / W), floor(kv_blocks / ceil(W / blk)))
    t_iter   = W_s + H_s * (fill * W / calib_ctx) * n                  [s]
    tps      = n / t_iter                                              [tokens/s per GPU]
    P(n)     = logistic power curve (kernels.power.logistic_power)    [W]
    tok/W    = tps / P                                                 [tokens/J]

n = n_max at the saturated point (batch == 0), else n = batch (infeasible above n_max).
n_max * W is constant, so t_iter is the same at every W and tok/W falls as 1/W up to the
power curve's drift: the 1/W law (Chen et al. 2026, arXiv 2603.17280).
"""

from collections.abc import Mapping

import jax.numpy as jnp

from kernels.common import apply_cap, choose_batch, efficiency, rounding
from kernels.power import logistic_power

PROFILE_INPUTS = (
    "w_s", "h_s", "calib_ctx", "max_slots", "kv_blocks", "blk",
    "power_idle", "power_nominal", "power_k", "power_x0",
)  # fmt: skip
POINT_INPUTS = ("context", "fill", "batch", "max_seqs")
INPUTS = PROFILE_INPUTS + POINT_INPUTS


def slot_limit(p: Mapping, relaxed: bool = False):
    """floor(max_slots * calib_ctx / W): the measured slots scaled to the window."""
    floor, _ = rounding(relaxed)
    return floor(p["max_slots"] * p["calib_ctx"] / p["context"])


def block_limit(p: Mapping, relaxed: bool = False):
    """floor(kv_blocks / ceil(W / blk)): sequences whose blocks fit in the KV cache."""
    floor, ceil = rounding(relaxed)
    return floor(p["kv_blocks"] / ceil(p["context"] / p["blk"]))


def concurrency_limit(p: Mapping, relaxed: bool = False):
    """n_max(W): the lower of the slot and KV-block limits, then the max_seqs cap."""
    limit = jnp.minimum(slot_limit(p, relaxed), block_limit(p, relaxed))
    return apply_cap(limit, p["max_seqs"])


def calibrated_point(p: Mapping, relaxed: bool = False) -> dict:
    """Every output of one calibrated design point; p maps INPUTS to scalars."""
    n_max = concurrency_limit(p, relaxed)
    n = choose_batch(n_max, p["batch"])
    feasible = (n_max >= 1) & (n <= n_max) if not relaxed else n_max > 0
    n_safe = jnp.where(feasible, n, 1.0)
    iter_time = p["w_s"] + p["h_s"] * (p["fill"] * p["context"] / p["calib_ctx"]) * n_safe
    power = logistic_power(n_safe, p["power_idle"], p["power_nominal"], p["power_k"], p["power_x0"])
    out = efficiency(n_safe, iter_time, 1.0, power, feasible)
    out["concurrency_limit"] = n_max
    return out

"""Roofline mode (MODEL.md section 2): first principles for any GPU x model x dtype x tp.

One decode iteration of a replica of ``tp`` GPUs, in which each of its B in-flight sequences
emits one token:

    weights_gpu   = total * w_bytes / tp                                        [bytes]
    kv_budget     = mem_capacity * mem_util - weights_gpu                       [bytes per GPU]
    B_max(W)      = floor(kv_budget / (kv_tok_gpu * blk * ceil(W / blk)))      [, min max_seqs]
    f_eff(B)      = f  ("active")  |  1 - (1 - f)**B  ("independent", default)
    streamed      = (dense - input_table + f_eff * expert) * w_bytes / tp       [bytes]
    kv_read       = B * fill * W * kv_tok_gpu                                   [bytes]
    t_mem         = (streamed + kv_read) / (mem_bw * bw_eff)                    [s]
    flops_iter    = 2 * B * active / tp + attention FLOPs * fill * W * B / tp   [FLOP per GPU]
    t_comp        = flops_iter / (flops * flops_eff)                            [s]
    t_iter        = max(t_mem, t_comp) + n_layers * t_layer                     [s]
    tps           = B / (t_iter * tp)                      [output tokens/s per GPU]
    P             = logistic(B) or activity power                               [W per GPU]
    tok/W         = tps / P                                                     [tokens/J]

Infeasible (NaN outputs, ``feasible`` false): the dtype is unsupported (flops == 0), the
weights do not fit (kv_budget <= 0), not one sequence fits (B_max < 1), a requested batch
exceeds B_max, or the window exceeds the model's max_position where ``context_limit`` > 0.

Not modelled: prefill interference, tensor-parallel all-reduce time, expert-parallel
dispatch, speculative decoding, host and cooling power.
"""

from collections.abc import Mapping

import jax.numpy as jnp

from kernels.common import apply_cap, choose_batch, efficiency, rounding
from kernels.model import (
    MODEL_FIELDS,
    active_params,
    attention_flops_per_token,
    kv_bytes_per_token_gpu,
    param_counts,
)
from kernels.power import activity_power, logistic_power

GPU_INPUTS = (
    "mem_bw",
    "mem_capacity",
    "flops",
    "tdp",
    "power_idle",
    "power_nominal",
    "power_k",
    "power_x0",
)
POINT_INPUTS = (
    "w_bytes",
    "kv_bytes",
    "tp",
    "batch",
    "context",
    "fill",
    "blk",
    "mem_util",
    "bw_eff",
    "flops_eff",
    "t_layer",
    "max_seqs",
    "sparsity",
    "context_limit",
)
INPUTS = GPU_INPUTS + MODEL_FIELDS + POINT_INPUTS

EXPERT_COVERAGE = ("independent", "active")
POWER_MODELS = ("logistic", "activity")


def expert_coverage_fraction(sparsity, batch, coverage: str):
    """Share of routed experts whose weights one iteration streams.

    "active": f (each token's experts, the paper's upper bound on efficiency);
    "independent": 1 - (1 - f)**B, B tokens routed independently.
    """
    if coverage == "active":
        return sparsity + 0.0 * batch
    below_one = sparsity < 1
    safe = jnp.where(below_one, sparsity, 0.5)  # keeps log1p finite, and its gradient
    return jnp.where(below_one, -jnp.expm1(batch * jnp.log1p(-safe)), 1.0)


def roofline_point(
    p: Mapping,
    expert_coverage: str = "independent",
    power: str = "logistic",
    relaxed: bool = False,
) -> dict:
    """Every output of one roofline design point; p maps INPUTS to scalars."""
    floor, ceil = rounding(relaxed)
    tp = p["tp"]
    counts = param_counts(p)
    active = active_params(counts, p["sparsity"])
    weights_gpu = counts.total * p["w_bytes"] / tp
    kv_tok_gpu = kv_bytes_per_token_gpu(p, p["kv_bytes"], tp)
    kv_budget = p["mem_capacity"] * p["mem_util"] - weights_gpu
    reserved_tokens = p["blk"] * ceil(p["context"] / p["blk"])
    # a budget <= 0 holds no sequence: B_max = 0, never negative
    seq_bytes = kv_tok_gpu * reserved_tokens
    b_max = apply_cap(floor(jnp.maximum(kv_budget, 0.0) / seq_bytes), p["max_seqs"])
    batch = choose_batch(b_max, p["batch"])

    fits = (p["flops"] > 0) & (kv_budget > 0)
    in_window = (p["context_limit"] <= 0) | (p["context"] <= p["max_position"])
    feasible = fits & in_window & (b_max >= 1) & (batch <= b_max) if not relaxed else fits
    b = jnp.where(feasible, batch, 1.0)  # safe to evaluate; masked to NaN below

    history = p["fill"] * p["context"]
    f_eff = expert_coverage_fraction(p["sparsity"], b, expert_coverage)
    streamed = (counts.dense - counts.input_table + f_eff * counts.expert) * p["w_bytes"] / tp
    kv_read = b * history * kv_tok_gpu
    t_mem = (streamed + kv_read) / (p["mem_bw"] * p["bw_eff"])
    flops_iter = (2 * active + attention_flops_per_token(p, history)) * b / tp
    peak = jnp.where(p["flops"] > 0, p["flops"], 1.0)
    t_comp = flops_iter / (peak * p["flops_eff"])
    iter_time = jnp.maximum(t_mem, t_comp) + p["n_layers"] * p["t_layer"]

    if power == "activity":
        kv_frac = kv_read / (streamed + kv_read)
        power_w = activity_power(p["tdp"], kv_frac, t_comp / iter_time)
    else:
        power_w = logistic_power(
            b, p["power_idle"], p["power_nominal"], p["power_k"], p["power_x0"]
        )

    nan = jnp.nan
    out = efficiency(b, iter_time, tp, power_w, feasible)
    out.update(
        t_mem=jnp.where(feasible, t_mem, nan),
        t_comp=jnp.where(feasible, t_comp, nan),
        bound=jnp.where(feasible, (t_comp > t_mem).astype(jnp.int8), -1).astype(jnp.int8),
        kv_budget=kv_budget,
        weights_gpu=weights_gpu,
        kv_tok_gpu=kv_tok_gpu,
        concurrency_limit=b_max,
        streamed=jnp.where(feasible, streamed, nan),
        kv_read=jnp.where(feasible, kv_read, nan),
        param_count=counts.total,
        active_param_count=active,
    )
    return out

"""The roofline and calibrated formulas of MODEL.md sections 1-2 in numpy, vectorised.

Why this exists beside ``kernels/``: a benchmark's baseline must be an independent
implementation of the same physics in the other library, not the JAX kernel run through
numpy. It is written again from MODEL.md (the same input names as ``kernels.roofline.INPUTS``
and ``kernels.calibrated.INPUTS``, flat 1-D arrays in, a dict of flat arrays out), and it
is checked against the JAX kernels at 1e-12 in float64 both by the benchmark itself
(``benchmarks/bench.py`` records the largest relative difference) and by
``tests/test_benchmarks.py``. It computes in the dtype of its inputs (float32 inputs stay
float32 under numpy 2's promotion rules), so it times both precisions.

It also carries a numpy copy of the engine's per-chunk work (flat index -> per-axis indices ->
gathers from the small per-axis tables -> the per-point ``prepare`` step), so that the
numpy baseline does the same work per point as one jitted chunk of ``sweep.engine``.

Elementwise only: no matrix products, so the BLAS library numpy links (OpenBLAS here) plays
no part in the timings.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

FLOPS_KEYS = ("flops_bf16", "flops_fp8", "flops_fp4")


# ---------------------------------------------------------------------------------------------
# shared pieces


def _floor_ceil(relaxed: bool):
    if relaxed:
        return (lambda x: x), (lambda x: x)
    return np.floor, np.ceil


def logistic_power(n, power_idle, power_nominal, power_k, power_x0):
    """P(n) = P_idle + (P_nom - P_idle) / (1 + exp(-k (log2(max(n, 1)) - x0))), W per GPU."""
    x = np.log2(np.maximum(n, 1.0))
    return power_idle + (power_nominal - power_idle) / (1.0 + np.exp(-power_k * (x - power_x0)))


def _outputs(n, iter_time, gpus_per_replica, power, feasible) -> dict:
    throughput = n / (iter_time * gpus_per_replica)
    return {
        "concurrency": np.where(feasible, n, np.nan),
        "iter_time": np.where(feasible, iter_time, np.nan),
        "throughput": np.where(feasible, throughput, np.nan),
        "power": np.where(feasible, power, np.nan),
        "tok_per_watt": np.where(feasible, throughput / power, np.nan),
        "energy_per_token": np.where(feasible, power / throughput, np.nan),
        "feasible": feasible,
    }


# ---------------------------------------------------------------------------------------------
# MODEL.md section 1: calibrated-profile mode


def calibrated(p: Mapping[str, np.ndarray], relaxed: bool = False) -> dict:
    """n_max = min(floor(max_slots calib_ctx / W), floor(kv_blocks / ceil(W / blk))) [, cap];
    t_iter = W_s + H_s (fill W / calib_ctx) n; tok/W = (n / t_iter) / P(n)."""
    floor, ceil = _floor_ceil(relaxed)
    W = p["context"]
    n_max = np.minimum(
        floor(p["max_slots"] * p["calib_ctx"] / W), floor(p["kv_blocks"] / ceil(W / p["blk"]))
    )
    n_max = np.where(p["max_seqs"] > 0, np.minimum(n_max, p["max_seqs"]), n_max)
    n = np.where(p["batch"] > 0, p["batch"], n_max)
    feasible = n_max > 0 if relaxed else (n_max >= 1) & (n <= n_max)
    n = np.where(feasible, n, 1.0)
    t_iter = p["w_s"] + p["h_s"] * (p["fill"] * W / p["calib_ctx"]) * n
    power = logistic_power(n, p["power_idle"], p["power_nominal"], p["power_k"], p["power_x0"])
    out = _outputs(n, t_iter, 1.0, power, feasible)
    out["concurrency_limit"] = n_max
    return out


# ---------------------------------------------------------------------------------------------
# MODEL.md section 2: roofline mode


def param_counts(m: Mapping[str, np.ndarray]) -> dict:
    """total, expert (routed only), dense = total - expert, input_table (untied: vocab hidden)."""
    hidden, n_heads = m["hidden"], m["n_heads"]
    mla = m["kv_lora_rank"] > 0
    q_width = n_heads * m["head_dim"]
    gqa_attn = 2 * hidden * q_width + 2 * hidden * (m["n_kv_heads"] * m["head_dim"])
    qk = m["qk_nope_head_dim"] + m["qk_rope_head_dim"]
    q_proj = np.where(
        m["q_lora_rank"] > 0,
        hidden * m["q_lora_rank"] + m["q_lora_rank"] * n_heads * qk,
        hidden * n_heads * qk,
    )
    mla_attn = (
        q_proj
        + hidden * (m["kv_lora_rank"] + m["qk_rope_head_dim"])
        + m["kv_lora_rank"] * n_heads * (m["qk_nope_head_dim"] + m["v_head_dim"])
        + n_heads * m["v_head_dim"] * hidden
    )
    attn = np.where(mla, mla_attn, gqa_attn)
    swiglu = 3 * hidden
    routed = m["n_experts"] * swiglu * m["moe_intermediate"]
    moe_layer = routed + m["n_shared_experts"] * swiglu * m["moe_intermediate"]
    moe_layer = moe_layer + hidden * m["n_experts"]
    n_moe = m["n_layers"] - m["n_dense_layers"]
    table = m["vocab"] * hidden
    untied = 1 - m["tied_embeddings"]
    total = (
        m["n_layers"] * attn
        + m["n_dense_layers"] * swiglu * m["intermediate"]
        + n_moe * moe_layer
        + table * (1 + untied)
    )
    expert = n_moe * routed
    dense = total - expert
    return {"total": total, "expert": expert, "dense": dense, "input_table": table * untied}


def default_sparsity(m: Mapping[str, np.ndarray]):
    """f = experts_per_token / n_experts, 1 for a dense model."""
    moe = m["n_experts"] > 0
    return np.where(moe, m["experts_per_token"] / np.where(moe, m["n_experts"], 1.0), 1.0)


def roofline(
    p: Mapping[str, np.ndarray],
    expert_coverage: str = "independent",
    power: str = "logistic",
    relaxed: bool = False,
) -> dict:
    """Every output of the roofline kernel (kernels.roofline.roofline_point) over flat arrays."""
    floor, ceil = _floor_ceil(relaxed)
    tp, W, f = p["tp"], p["context"], p["sparsity"]
    mla = p["kv_lora_rank"] > 0
    c = param_counts(p)
    active = c["dense"] + f * c["expert"]
    weights_gpu = c["total"] * p["w_bytes"] / tp

    kv_heads_gpu = np.maximum(p["n_kv_heads"] / tp, 1.0)  # sharded over tp, then replicated
    gqa_kv = 2 * p["n_layers"] * p["head_dim"] * p["kv_bytes"] * kv_heads_gpu
    mla_kv = p["n_layers"] * (p["kv_lora_rank"] + p["qk_rope_head_dim"]) * p["kv_bytes"]
    kv_tok_gpu = np.where(mla, mla_kv, gqa_kv)
    kv_budget = p["mem_capacity"] * p["mem_util"] - weights_gpu
    reserved = p["blk"] * ceil(W / p["blk"])
    b_max = floor(np.maximum(kv_budget, 0.0) / (kv_tok_gpu * reserved))
    b_max = np.where(p["max_seqs"] > 0, np.minimum(b_max, p["max_seqs"]), b_max)
    batch = np.where(p["batch"] > 0, p["batch"], b_max)

    fits = (p["flops"] > 0) & (kv_budget > 0)
    if relaxed:
        feasible = fits
    else:
        in_window = (p["context_limit"] <= 0) | (W <= p["max_position"])
        feasible = fits & in_window & (b_max >= 1) & (batch <= b_max)
    B = np.where(feasible, batch, 1.0)

    history = p["fill"] * W
    if expert_coverage == "active":
        f_eff = f + 0.0 * B
    elif expert_coverage == "independent":
        below = f < 1
        safe = np.where(below, f, 0.5)
        f_eff = np.where(below, -np.expm1(B * np.log1p(-safe)), 1.0)
    else:
        raise ValueError(f"expert_coverage {expert_coverage!r}")
    streamed = (c["dense"] - c["input_table"] + f_eff * c["expert"]) * p["w_bytes"] / tp
    kv_read = B * history * kv_tok_gpu
    t_mem = (streamed + kv_read) / (p["mem_bw"] * p["bw_eff"])
    gqa_attn = 4 * p["n_layers"] * p["n_heads"] * p["head_dim"] * history
    mla_attn = (
        2 * p["n_layers"] * p["n_heads"] * (2 * p["kv_lora_rank"] + p["qk_rope_head_dim"]) * history
    )
    flops_iter = (2 * active + np.where(mla, mla_attn, gqa_attn)) * B / tp
    peak = np.where(p["flops"] > 0, p["flops"], 1.0)
    t_comp = flops_iter / (peak * p["flops_eff"])
    t_iter = np.maximum(t_mem, t_comp) + p["n_layers"] * p["t_layer"]

    if power == "activity":
        kv_frac = kv_read / (streamed + kv_read)
        power_w = p["tdp"] * (0.43 + 0.43 * np.minimum(1.0, kv_frac + t_comp / t_iter))
    elif power == "logistic":
        power_w = logistic_power(
            B, p["power_idle"], p["power_nominal"], p["power_k"], p["power_x0"]
        )
    else:
        raise ValueError(f"power {power!r}")

    out = _outputs(B, t_iter, tp, power_w, feasible)
    out.update(
        t_mem=np.where(feasible, t_mem, np.nan),
        t_comp=np.where(feasible, t_comp, np.nan),
        bound=np.where(feasible, (t_comp > t_mem).astype(np.int8), np.int8(-1)).astype(np.int8),
        kv_budget=kv_budget,
        weights_gpu=weights_gpu,
        kv_tok_gpu=kv_tok_gpu,
        concurrency_limit=b_max,
        streamed=np.where(feasible, streamed, np.nan),
        kv_read=np.where(feasible, kv_read, np.nan),
        param_count=c["total"],
        active_param_count=active,
    )
    return out


# ---------------------------------------------------------------------------------------------
# the engine's per-chunk work, in numpy


def prepare_roofline(p: dict) -> dict:
    """The per-point inputs that depend on two axes: the dtype's FLOP/s, the default sparsity."""
    p = dict(p)
    i = p.pop("flops_index")
    bf16, fp8, fp4 = (p.pop(k) for k in FLOPS_KEYS)
    p["flops"] = np.where(i == 0, bf16, np.where(i == 1, fp8, fp4))
    if "sparsity" not in p:
        p["sparsity"] = default_sparsity(p)
    return p


def axis_tables(problem, dtype=None) -> tuple[list[dict], dict]:
    """Per-axis input tables and constants of a ``sweep.engine.Problem`` as numpy arrays."""
    dtype = np.dtype(dtype or problem.dtype)
    tables = [{k: np.asarray(v, dtype=dtype) for k, v in a.fields.items()} for a in problem.axes]
    constants = {k: dtype.type(v) for k, v in problem.constants.items()}
    return tables, constants


def gather(problem, tables, constants, flat_index: np.ndarray) -> dict:
    """The inputs of the points at ``flat_index``: unravel, then gather from the tables."""
    indices = np.unravel_index(flat_index, problem.shape)
    n = flat_index.shape[0]
    p = {}
    for table, idx in zip(tables, indices, strict=True):
        for k, v in table.items():
            p[k] = v[idx]
    for k, v in constants.items():
        p[k] = np.full(n, v)
    return p


def evaluate_points(problem, flat_index, mode="roofline", tables=None, **kernel_options) -> dict:
    """Every output at ``flat_index`` of a roofline or calibrated Problem, in numpy."""
    if tables is None:
        tables = axis_tables(problem)
    p = gather(problem, *tables, flat_index)
    if mode == "calibrated":
        return calibrated(p, **kernel_options)
    return roofline(prepare_roofline(p), **kernel_options)

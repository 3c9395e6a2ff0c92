"""Slow, obvious, plain-Python reference for the physics in MODEL.md sections 1 and 2.

Written straight from /work/shared/MODEL.md, using only the ``math`` module, so that the fast JAX
kernels can be checked against an independent implementation at random points in float64.
Nothing here is vectorised or clever: one point in, one dict out.

Where MODEL.md is ambiguous the choice made is written in a comment marked ``CHOICE:``.
"""

import math

NAN = float("nan")

# ---------------------------------------------------------------------------------------------
# Section 1: calibrated-profile mode
# ---------------------------------------------------------------------------------------------

_CALIBRATED_FLOATS = (
    "concurrency",
    "iter_time",
    "throughput",
    "power",
    "tok_per_watt",
    "energy_per_token",
)


def logistic_power(n, power_idle, power_nominal, power_k, power_x0):
    """P(n) = P_idle + (P_nom - P_idle) / (1 + exp(-k * (log2(max(n, 1)) - x0)))."""
    x = math.log2(max(n, 1))
    return power_idle + (power_nominal - power_idle) / (1.0 + math.exp(-power_k * (x - power_x0)))


def calibrated(p: dict) -> dict:
    """MODEL.md section 1, one point.

    p: w_s, h_s, calib_ctx, max_slots, kv_blocks, blk, power_idle, power_nominal, power_k,
    power_x0, context, fill, batch (0 = saturated), max_seqs (0 = no cap).
    """
    W = p["context"]
    blk = p["blk"]
    n_slots = math.floor(p["max_slots"] * p["calib_ctx"] / W)
    n_blocks = math.floor(p["kv_blocks"] / math.ceil(W / blk))
    n_max = min(n_slots, n_blocks)
    # CHOICE: section 1 does not mention max_seqs; the cap is applied exactly as in section 2
    # (after the floors, before the n_max < 1 feasibility test).
    if p.get("max_seqs", 0):
        n_max = min(n_max, p["max_seqs"])

    batch = p.get("batch", 0)
    feasible = n_max >= 1 and not (batch and batch > n_max)
    if not feasible:
        out = dict.fromkeys(_CALIBRATED_FLOATS, NAN)
        out["feasible"] = False
        return out

    n = batch if batch else n_max
    t_iter = p["w_s"] + p["h_s"] * (p["fill"] * W / p["calib_ctx"]) * n
    # CHOICE: MODEL.md calls n / t_iter "tokens/s, per GPU" even for a TP8 profile; taken
    # literally (no division by tp: calibrated profiles carry no tp key).
    tps = n / t_iter
    power = logistic_power(n, p["power_idle"], p["power_nominal"], p["power_k"], p["power_x0"])
    return {
        "concurrency": float(n),
        "iter_time": t_iter,
        "throughput": tps,
        "power": power,
        "tok_per_watt": tps / power,
        "energy_per_token": power / tps,
        "feasible": True,
    }


# ---------------------------------------------------------------------------------------------
# Section 2: parameter counts
# ---------------------------------------------------------------------------------------------


def _is_mla(m):
    return m.get("kv_lora_rank", 0) > 0


def attn_params_per_layer(m: dict) -> float:
    """Attention projection parameters of one layer (GQA or MLA), norms and biases ignored."""
    hidden = m["hidden"]
    n_heads = m["n_heads"]
    if _is_mla(m):
        q_lora = m.get("q_lora_rank", 0)
        kv_lora = m["kv_lora_rank"]
        nope = m["qk_nope_head_dim"]
        rope = m["qk_rope_head_dim"]
        v_head = m["v_head_dim"]
        if q_lora > 0:
            q = hidden * q_lora + q_lora * n_heads * (nope + rope)
        else:
            # MODEL.md: "(no q_lora_rank: hidden*n_heads*(qk_nope+qk_rope))"
            q = hidden * n_heads * (nope + rope)
        kv = hidden * (kv_lora + rope) + kv_lora * n_heads * (nope + v_head)
        o = n_heads * v_head * hidden
        return q + kv + o
    head_dim = m["head_dim"]
    n_kv = m["n_kv_heads"]
    return (
        hidden * (n_heads * head_dim)
        + 2 * hidden * (n_kv * head_dim)
        + (n_heads * head_dim) * hidden
    )


def param_counts(m: dict) -> dict:
    """MODEL.md section 2 "Parameter counts" (SwiGLU FFN; norms and biases ignored).

    Layers 0..n_dense_layers-1 have a dense FFN of width ``intermediate``; layers
    n_dense_layers..n_layers-1 are MoE layers.  A dense model has n_experts = 0 and
    n_dense_layers = n_layers.
    """
    hidden = m["hidden"]
    n_layers = m["n_layers"]
    n_dense_layers = m.get("n_dense_layers", n_layers)
    n_moe_layers = n_layers - n_dense_layers
    n_experts = m.get("n_experts", 0)
    moe_inter = m.get("moe_intermediate", 0)
    n_shared = m.get("n_shared_experts", 0)

    attn = attn_params_per_layer(m)
    dense_ffn = 3 * hidden * m["intermediate"]
    routed = n_experts * 3 * hidden * moe_inter
    shared = n_shared * 3 * hidden * moe_inter
    router = hidden * n_experts
    moe_ffn = routed + shared + router

    input_table = m["vocab"] * hidden
    embeddings = input_table if m.get("tied_embeddings", 0) else 2 * input_table

    total = 0
    for layer in range(n_layers):
        total += attn
        total += dense_ffn if layer < n_dense_layers else moe_ffn
    total += embeddings

    # "expert = routed expert parameters only": the router and the shared experts are always
    # active, so they count as dense.
    expert = n_moe_layers * routed
    dense = total - expert
    # CHOICE: the MODEL.md default f = experts_per_token / n_experts (or 0 for a dense model,
    # where expert = 0 and f does not matter); callers of roofline() pass p["sparsity"].
    f = m.get("sparsity", m["experts_per_token"] / n_experts if n_experts else 0.0)
    active = dense + f * expert
    return {
        "total": total,
        "expert": expert,
        "dense": dense,
        "active": active,
        # "input_table = vocab*hidden when untied, else 0: the input lookup is a gather"
        "input_table": 0 if m.get("tied_embeddings", 0) else input_table,
        "attn_per_layer": attn,
    }


# ---------------------------------------------------------------------------------------------
# Section 2: roofline mode
# ---------------------------------------------------------------------------------------------

_ROOFLINE_FLOATS = (
    "concurrency",
    "iter_time",
    "throughput",
    "power",
    "tok_per_watt",
    "energy_per_token",
    "t_mem",
    "t_comp",
    "bound",
    "b_max",
    "streamed",
    "kv_read",
    "flops_iter",
)


def _infeasible(kv_budget, weights_gpu, kv_tok_gpu):
    out = dict.fromkeys(_ROOFLINE_FLOATS, NAN)
    out["kv_budget"] = kv_budget
    out["weights_gpu"] = weights_gpu
    out["kv_tok_gpu"] = kv_tok_gpu
    out["feasible"] = False
    return out


def roofline(p: dict, expert_coverage="independent", power="logistic", relaxed=False) -> dict:
    """MODEL.md section 2, one decode point of one (GPU, model, dtype, tp, W, B)."""
    if expert_coverage not in ("active", "independent"):
        raise ValueError(f"unknown expert_coverage {expert_coverage!r}")
    if power not in ("logistic", "activity"):
        raise ValueError(f"unknown power model {power!r}")

    mla = _is_mla(p)
    counts = param_counts(p)
    total = counts["total"]
    expert = counts["expert"]
    dense = counts["dense"]
    active = counts["active"]
    input_table = counts["input_table"]
    f = p["sparsity"]

    tp = p["tp"]
    W = p["context"]
    fill = p["fill"]
    blk = p["blk"]
    w_bytes = p["w_bytes"]
    kv_bytes = p["kv_bytes"]
    n_layers = p["n_layers"]
    n_heads = p["n_heads"]

    # --- memory and the concurrency limit (deployment properties: always computed) ---
    weights_gpu = total * w_bytes / tp
    if mla:
        # "the latent is replicated": no division by tp.
        kv_tok_gpu = n_layers * (p["kv_lora_rank"] + p["qk_rope_head_dim"]) * kv_bytes
    else:
        # CHOICE: n_kv_heads / tp is true (float) division, as written; with tp > n_kv_heads the
        # KV heads are replicated so a GPU still holds at least one head.
        kv_tok_gpu = 2 * n_layers * p["head_dim"] * kv_bytes * max(p["n_kv_heads"] / tp, 1)
    kv_budget = p["mem_capacity"] * p["mem_util"] - weights_gpu

    if p["flops"] == 0 or kv_budget <= 0:
        return _infeasible(kv_budget, weights_gpu, kv_tok_gpu)
    # CHOICE: context_limit is a switch (0 = off); when on, the limit is the model's
    # max_position, as the brief states.  In the relaxed mode only flops == 0 and
    # kv_budget <= 0 give nan (the brief's list), so the context limit is not applied there.
    if not relaxed and p.get("context_limit", 0) and W > p["max_position"]:
        return _infeasible(kv_budget, weights_gpu, kv_tok_gpu)

    if relaxed:
        # floor and ceil dropped: blk * ceil(W / blk) -> W.
        b_max = kv_budget / (kv_tok_gpu * W)
    else:
        b_max = math.floor(kv_budget / (kv_tok_gpu * blk * math.ceil(W / blk)))
    # CHOICE: the max_seqs cap is a min(), not a floor, so it is kept in the relaxed mode too.
    if p.get("max_seqs", 0):
        b_max = min(b_max, p["max_seqs"])

    batch = p.get("batch", 0)
    if not relaxed and (b_max < 1 or (batch and batch > b_max)):
        return _infeasible(kv_budget, weights_gpu, kv_tok_gpu)
    B = batch if batch else b_max

    # --- one decode iteration ---
    if expert_coverage == "active":
        f_eff = f
    else:
        # CHOICE: in the relaxed mode B may be fractional; (1 - f)**B is used as is.
        f_eff = 1.0 - (1.0 - f) ** B
    streamed = (dense - input_table + f_eff * expert) * w_bytes / tp
    kv_read = B * fill * W * kv_tok_gpu
    t_mem = (streamed + kv_read) / (p["mem_bw"] * p["bw_eff"])

    if mla:
        attention = (
            2
            * n_layers
            * n_heads
            * (2 * p["kv_lora_rank"] + p["qk_rope_head_dim"])
            * fill
            * W
            * B
            / tp
        )
    else:
        attention = 4 * n_layers * n_heads * p["head_dim"] * fill * W * B / tp
    # CHOICE: "active" here is the active-parameter count at f = p["sparsity"] (as the brief
    # states), independent of expert_coverage, which only changes the bytes streamed.
    flops_iter = 2 * B * active / tp + attention
    t_comp = flops_iter / (p["flops"] * p["flops_eff"])

    t_iter = max(t_mem, t_comp) + n_layers * p["t_layer"]
    tps = B / (t_iter * tp)

    if power == "logistic":
        P = logistic_power(B, p["power_idle"], p["power_nominal"], p["power_k"], p["power_x0"])
    else:
        kv_frac = kv_read / (streamed + kv_read)
        P = p["tdp"] * (0.43 + 0.43 * min(1.0, kv_frac + t_comp / t_iter))

    return {
        "concurrency": float(B),
        "iter_time": t_iter,
        "throughput": tps,
        "power": P,
        "tok_per_watt": tps / P,
        "energy_per_token": P / tps,
        "feasible": True,
        "t_mem": t_mem,
        "t_comp": t_comp,
        # bound: 1.0 compute (t_comp > t_mem, strictly), else 0.0 memory; a tie is memory.
        "bound": 1.0 if t_comp > t_mem else 0.0,
        "kv_budget": kv_budget,
        "weights_gpu": weights_gpu,
        "kv_tok_gpu": kv_tok_gpu,
        "b_max": float(b_max),
        "streamed": streamed,
        "kv_read": kv_read,
        "flops_iter": flops_iter,
    }

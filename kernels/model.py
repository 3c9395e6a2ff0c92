"""Transformer parameter counts, KV bytes and attention FLOPs (MODEL.md section 2).

Functions take a mapping ``m`` of Hugging Face config fields (as numbers, so that they
broadcast over a ``model`` axis): n_layers, hidden, n_heads, n_kv_heads, head_dim,
intermediate, vocab, tied_embeddings (0/1), n_experts, experts_per_token, moe_intermediate,
n_shared_experts, n_dense_layers, q_lora_rank, kv_lora_rank, qk_nope_head_dim,
qk_rope_head_dim, v_head_dim.

Conventions: a dense model has n_experts = 0 and n_dense_layers = n_layers; layers
n_dense_layers .. n_layers-1 carry a MoE FFN; MLA attention (DeepSeek) is used where
kv_lora_rank > 0. SwiGLU FFNs (three matrices); norms and biases are ignored.
"""

from collections.abc import Mapping
from typing import NamedTuple

import jax.numpy as jnp

MODEL_FIELDS = (
    "n_layers",
    "hidden",
    "n_heads",
    "n_kv_heads",
    "head_dim",
    "intermediate",
    "vocab",
    "tied_embeddings",
    "n_experts",
    "experts_per_token",
    "moe_intermediate",
    "n_shared_experts",
    "n_dense_layers",
    "q_lora_rank",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
    "max_position",
)


class ParamCounts(NamedTuple):
    total: object  # every weight, all experts resident
    expert: object  # routed-expert weights only
    dense: object  # total - expert: weights every token touches
    input_table: object  # vocab * hidden when untied (a gather, not streamed), else 0


def is_mla(m: Mapping):
    return m["kv_lora_rank"] > 0


def attention_params_per_layer(m: Mapping):
    """GQA: q, k, v, o projections.  MLA: low-rank q and kv paths plus the output projection."""
    q_width = m["n_heads"] * m["head_dim"]
    gqa = 2 * m["hidden"] * q_width + 2 * m["hidden"] * (m["n_kv_heads"] * m["head_dim"])
    qk = m["qk_nope_head_dim"] + m["qk_rope_head_dim"]
    q_proj = jnp.where(
        m["q_lora_rank"] > 0,
        m["hidden"] * m["q_lora_rank"] + m["q_lora_rank"] * m["n_heads"] * qk,
        m["hidden"] * m["n_heads"] * qk,
    )
    mla = (
        q_proj
        + m["hidden"] * (m["kv_lora_rank"] + m["qk_rope_head_dim"])
        + m["kv_lora_rank"] * m["n_heads"] * (m["qk_nope_head_dim"] + m["v_head_dim"])
        + m["n_heads"] * m["v_head_dim"] * m["hidden"]
    )
    return jnp.where(is_mla(m), mla, gqa)


def param_counts(m: Mapping) -> ParamCounts:
    """Total, routed-expert, dense and input-table parameter counts."""
    swiglu = 3 * m["hidden"]
    n_moe_layers = m["n_layers"] - m["n_dense_layers"]
    routed = m["n_experts"] * swiglu * m["moe_intermediate"]
    moe_layer = routed + m["n_shared_experts"] * swiglu * m["moe_intermediate"]
    moe_layer = moe_layer + m["hidden"] * m["n_experts"]  # router
    table = m["vocab"] * m["hidden"]
    untied = 1 - m["tied_embeddings"]
    total = (
        m["n_layers"] * attention_params_per_layer(m)
        + m["n_dense_layers"] * swiglu * m["intermediate"]
        + n_moe_layers * moe_layer
        + table * (1 + untied)
    )
    expert = n_moe_layers * routed
    return ParamCounts(total, expert, total - expert, table * untied)


def default_sparsity(m: Mapping):
    """Active expert fraction f = experts_per_token / n_experts (1 for a dense model)."""
    has_experts = m["n_experts"] > 0
    return jnp.where(
        has_experts, m["experts_per_token"] / jnp.where(has_experts, m["n_experts"], 1), 1.0
    )


def active_params(counts: ParamCounts, sparsity):
    """Parameters a token touches: dense + f * expert."""
    return counts.dense + sparsity * counts.expert


def kv_bytes_per_token_gpu(m: Mapping, kv_bytes, tp):
    """KV-cache bytes one token of history occupies on each GPU of a replica.

    GQA: 2 (K and V) * n_layers * head_dim * kv_bytes * max(n_kv_heads / tp, 1): KV heads are
    sharded over tp until each GPU holds one, then replicated.
    MLA: n_layers * (kv_lora_rank + qk_rope) * kv_bytes: the latent is replicated on every GPU.
    """
    gqa = 2 * m["n_layers"] * m["head_dim"] * kv_bytes * jnp.maximum(m["n_kv_heads"] / tp, 1.0)
    mla = m["n_layers"] * (m["kv_lora_rank"] + m["qk_rope_head_dim"]) * kv_bytes
    return jnp.where(is_mla(m), mla, gqa)


def attention_flops_per_token(m: Mapping, history_tokens):
    """Decode attention FLOPs for one new token attending over ``history_tokens`` (whole replica).

    GQA: 4 * n_layers * n_heads * head_dim * history (QK^T and PV, 2 FLOPs per MAC).
    MLA (absorbed): 2 * n_layers * n_heads * (2 * kv_lora_rank + qk_rope) * history.
    """
    gqa = 4 * m["n_layers"] * m["n_heads"] * m["head_dim"] * history_tokens
    mla = (
        2
        * m["n_layers"]
        * m["n_heads"]
        * (2 * m["kv_lora_rank"] + m["qk_rope_head_dim"])
        * history_tokens
    )
    return jnp.where(is_mla(m), mla, gqa)

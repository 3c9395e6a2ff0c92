"""Pins tests/reference_model.py (the plain-Python reference of MODEL.md) to published numbers.

Each published number has its source in a comment above its test.  The identity tests at the
bottom hold for any correct implementation of MODEL.md, whatever the inputs.
"""

import math
import random

import pytest

try:
    from tests import reference_model as ref
except ImportError:  # tests/ itself on sys.path (pytest's default rootdir-less import)
    import reference_model as ref

# ---------------------------------------------------------------------------------------------
# Fixtures: calibrated profile, model configs, a GPU
# ---------------------------------------------------------------------------------------------

# inference-fleet-sim's h100 calibration (Llama-3.1-70B, TP8), MODEL.md section 1 table.
H100_PROFILE = {
    "w_s": 0.0040,
    "h_s": 0.00032,
    "calib_ctx": 8192,
    "max_slots": 256,
    "kv_blocks": 65536,
    "blk": 16,
    "power_idle": 300.0,
    "power_nominal": 600.0,
    "power_k": 1.0,
    "power_x0": 4.2,
    "fill": 0.5,
    "batch": 0,
    "max_seqs": 0,
}

_NO_MOE_NO_MLA = {
    "tied_embeddings": 0,
    "n_experts": 0,
    "experts_per_token": 0,
    "moe_intermediate": 0,
    "n_shared_experts": 0,
    "q_lora_rank": 0,
    "kv_lora_rank": 0,
    "qk_nope_head_dim": 0,
    "qk_rope_head_dim": 0,
    "v_head_dim": 0,
}


def _dense(n_layers, hidden, n_heads, n_kv_heads, head_dim, intermediate, vocab, max_position):
    return {
        **_NO_MOE_NO_MLA,
        "n_layers": n_layers,
        "hidden": hidden,
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads,
        "head_dim": head_dim,
        "intermediate": intermediate,
        "vocab": vocab,
        "n_dense_layers": n_layers,
        "max_position": max_position,
    }


# Published Hugging Face config.json values (norms, biases, rope settings omitted).
# meta-llama/Llama-3.1-8B/config.json
LLAMA_8B = _dense(32, 4096, 32, 8, 128, 14336, 128256, 131072)
# meta-llama/Llama-3.1-70B/config.json
LLAMA_70B = _dense(80, 8192, 64, 8, 128, 28672, 128256, 131072)
# meta-llama/Llama-3.1-405B/config.json
LLAMA_405B = _dense(126, 16384, 128, 8, 128, 53248, 128256, 131072)
# Qwen/Qwen3-235B-A22B/config.json (intermediate_size 12288 is unused: every layer is MoE)
QWEN3_235B = {
    **_dense(94, 4096, 64, 4, 128, 12288, 151936, 40960),
    "n_dense_layers": 0,
    "n_experts": 128,
    "experts_per_token": 8,
    "moe_intermediate": 1536,
}
# Qwen/Qwen3-30B-A3B/config.json (intermediate_size 6144 is unused: every layer is MoE)
QWEN3_30B = {
    **_dense(48, 2048, 32, 4, 128, 6144, 151936, 40960),
    "n_dense_layers": 0,
    "n_experts": 128,
    "experts_per_token": 8,
    "moe_intermediate": 768,
}
# mistralai/Mixtral-8x7B-v0.1/config.json (experts are full 14336-wide SwiGLU FFNs)
MIXTRAL_8X7B = {
    **_dense(32, 4096, 32, 8, 128, 14336, 32000, 32768),
    "n_dense_layers": 0,
    "n_experts": 8,
    "experts_per_token": 2,
    "moe_intermediate": 14336,
}
# deepseek-ai/DeepSeek-V3/config.json (first_k_dense_replace 3, n_routed_experts 256,
# num_experts_per_tok 8, n_shared_experts 1; the MTP module is not part of the 671B)
DEEPSEEK_V3 = {
    **_dense(61, 7168, 128, 128, 128, 18432, 129280, 163840),
    "n_dense_layers": 3,
    "n_experts": 256,
    "experts_per_token": 8,
    "moe_intermediate": 2048,
    "n_shared_experts": 1,
    "q_lora_rank": 1536,
    "kv_lora_rank": 512,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
}

MODELS = {
    "Llama-3.1-8B": LLAMA_8B,
    "Llama-3.1-70B": LLAMA_70B,
    "Llama-3.1-405B": LLAMA_405B,
    "Qwen3-235B-A22B": QWEN3_235B,
    "Qwen3-30B-A3B": QWEN3_30B,
    "Mixtral-8x7B": MIXTRAL_8X7B,
    "DeepSeek-V3": DEEPSEEK_V3,
}

# H100 SXM datasheet: 80 GB HBM3 at 3.35 TB/s, 989 TFLOP/s dense BF16, 700 W TDP; the
# measured power curve of MODEL.md section 1 (300/600 W, k 1.0, x0 4.2).
H100 = {
    "mem_bw": 3.35e12,
    "mem_capacity": 80e9,
    "flops": 989e12,
    "tdp": 700.0,
    "power_idle": 300.0,
    "power_nominal": 600.0,
    "power_k": 1.0,
    "power_x0": 4.2,
}

# MODEL.md "Symbols" defaults; bf16 weights and KV.
DEFAULTS = {
    "w_bytes": 2.0,
    "kv_bytes": 2.0,
    "tp": 1,
    "batch": 0,
    "fill": 0.5,
    "blk": 16,
    "mem_util": 0.90,
    "bw_eff": 0.80,
    "flops_eff": 0.80,
    "t_layer": 3e-6,
    "max_seqs": 0,
    "context_limit": 0,
}


def point(model, context, **over):
    """A roofline input dict: H100 x model x defaults, sparsity at the MODEL.md default f."""
    f = model["experts_per_token"] / model["n_experts"] if model["n_experts"] else 0.0
    return {**H100, **model, **DEFAULTS, "sparsity": f, "context": context, **over}


def within(value, published, rel=0.02):
    return abs(value - published) <= rel * published


# ---------------------------------------------------------------------------------------------
# Section 1: the paper's headline
# ---------------------------------------------------------------------------------------------


# Source: arXiv 2603.17280 abstract and MODEL.md section 1 "Check": h100 at W = 4096 holds
# n = 256 sequences and gives tok/W = 17.6 (fill 0.5, saturated).
def test_calibrated_h100_4k_headline():
    r = ref.calibrated({**H100_PROFILE, "context": 4096})
    assert r["feasible"]
    assert r["concurrency"] == 256
    assert round(r["tok_per_watt"], 1) == 17.6


# Source: arXiv 2603.17280 abstract and MODEL.md section 1 "Check": h100 at W = 65536 holds
# n = 16 sequences and gives tok/W = 1.50.
def test_calibrated_h100_64k_headline():
    r = ref.calibrated({**H100_PROFILE, "context": 65536})
    assert r["feasible"]
    assert r["concurrency"] == 16
    assert round(r["tok_per_watt"], 2) == 1.50


# Source: MODEL.md section 1: "In this mode n_max * W is constant, so t_iter is the same at
# every W" (over the KV-block-bound range 4K..64K of the h100 profile).
def test_calibrated_nmax_times_w_constant_and_t_iter_flat():
    rs = [ref.calibrated({**H100_PROFILE, "context": 2**e}) for e in range(12, 17)]
    assert {r["concurrency"] * 2**e for r, e in zip(rs, range(12, 17), strict=True)} == {2**20}
    for r in rs:
        assert math.isclose(r["iter_time"], rs[0]["iter_time"], rel_tol=1e-12)


def test_calibrated_hand_arithmetic():
    # W = 4096: n = min(floor(256*8192/4096), floor(65536/256)) = min(512, 256) = 256
    # t_iter = 0.004 + 0.00032 * 0.25 * 256 = 0.02448
    r = ref.calibrated({**H100_PROFILE, "context": 4096})
    assert math.isclose(r["iter_time"], 0.02448, rel_tol=1e-12)
    assert math.isclose(r["throughput"], 256 / 0.02448, rel_tol=1e-12)
    p = 300 + 300 / (1 + math.exp(-(8 - 4.2)))
    assert math.isclose(r["power"], p, rel_tol=1e-12)


def test_calibrated_batch_and_cap():
    r = ref.calibrated({**H100_PROFILE, "context": 65536, "batch": 8})
    assert r["feasible"] and r["concurrency"] == 8
    r = ref.calibrated({**H100_PROFILE, "context": 65536, "batch": 17})
    assert not r["feasible"]
    assert all(math.isnan(v) for k, v in r.items() if k != "feasible")
    r = ref.calibrated({**H100_PROFILE, "context": 4096, "max_seqs": 100})
    assert r["concurrency"] == 100
    # W beyond kv_blocks * blk: not a single sequence fits.
    r = ref.calibrated({**H100_PROFILE, "context": 65536 * 16 + 1})
    assert not r["feasible"]


# ---------------------------------------------------------------------------------------------
# Section 2: parameter counts against published totals
# ---------------------------------------------------------------------------------------------

# Source: MODEL.md section 2 "Check against published totals (within 2%)", which quotes the
# model cards: Llama-3.1 8B / 70.6B / 405.9B (meta-llama model cards), Qwen3-235B-A22B 235B
# total 22B active and Qwen3-30B-A3B 30.5B / 3.3B (Qwen3 technical report), Mixtral-8x7B
# 46.7B / 12.9B (arXiv 2401.04088), DeepSeek-V3 671B / 37B (arXiv 2412.19437).
PUBLISHED = {
    "Llama-3.1-8B": (8.0e9, None),
    "Llama-3.1-70B": (70.6e9, None),
    "Llama-3.1-405B": (405.9e9, None),
    "Qwen3-235B-A22B": (235e9, 22e9),
    "Qwen3-30B-A3B": (30.5e9, 3.3e9),
    "Mixtral-8x7B": (46.7e9, 12.9e9),
    "DeepSeek-V3": (671e9, 37e9),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_totals_within_2pct(name):
    total, active = PUBLISHED[name]
    c = ref.param_counts(MODELS[name])
    assert within(c["total"], total), c["total"]
    if active is None:  # dense: every parameter is active
        assert c["expert"] == 0
        assert c["active"] == c["total"]
    else:  # active at f = experts_per_token / n_experts
        assert within(c["active"], active), c["active"]


def test_param_count_pieces_by_hand():
    # Llama-3.1-8B, GQA: q 4096*4096 + k,v 2*4096*1024 + o 4096*4096
    c = ref.param_counts(LLAMA_8B)
    assert c["attn_per_layer"] == 2 * 4096 * 4096 + 2 * 4096 * 1024
    assert c["input_table"] == 128256 * 4096
    # DeepSeek-V3, MLA with q LoRA
    c = ref.param_counts(DEEPSEEK_V3)
    mla = (
        7168 * 1536
        + 1536 * 128 * 192
        + 7168 * (512 + 64)
        + 512 * 128 * (128 + 128)
        + 128 * 128 * 7168
    )
    assert c["attn_per_layer"] == mla
    assert c["expert"] == 58 * 256 * 3 * 7168 * 2048
    # MLA without q LoRA: a single hidden -> n_heads*(nope+rope) projection
    c0 = ref.param_counts({**DEEPSEEK_V3, "q_lora_rank": 0})
    assert c0["attn_per_layer"] == mla - 7168 * 1536 - 1536 * 128 * 192 + 7168 * 128 * 192
    # tied embeddings: one table, and it is not subtracted from the streamed bytes
    ct = ref.param_counts({**LLAMA_8B, "tied_embeddings": 1})
    assert ct["total"] == ref.param_counts(LLAMA_8B)["total"] - 128256 * 4096
    assert ct["input_table"] == 0


# ---------------------------------------------------------------------------------------------
# Section 2: roofline identities and regimes
# ---------------------------------------------------------------------------------------------


def _random_points(n, seed):
    rng = random.Random(seed)
    names = list(MODELS)
    for _ in range(n):
        model = MODELS[rng.choice(names)]
        dtype = rng.choice([(2.0, 2.0, 989e12), (1.0, 1.0, 1979e12), (0.5, 1.0, 0.0)])
        yield point(
            model,
            rng.choice([rng.randint(1, 300_000), 2 ** rng.randint(7, 17)]),
            w_bytes=dtype[0],
            kv_bytes=dtype[1],
            flops=dtype[2] if dtype[2] else rng.choice([0.0, 3958e12]),
            tp=rng.choice([1, 2, 4, 8, 16]),
            mem_capacity=rng.choice([80e9, 141e9, 192e9]),
            fill=rng.uniform(0.05, 1.0),
            batch=rng.choice([0, 0, 1, rng.randint(1, 512)]),
            max_seqs=rng.choice([0, 0, 64, 256]),
            sparsity=rng.uniform(0.01, 0.5) if model["n_experts"] else 0.0,
            context_limit=rng.choice([0, 1]),
        )


MODES = [
    (cov, pw, relaxed)
    for cov in ("independent", "active")
    for pw in ("logistic", "activity")
    for relaxed in (False, True)
]


@pytest.mark.parametrize(("coverage", "power", "relaxed"), MODES)
def test_energy_per_token_times_tok_per_watt_is_one(coverage, power, relaxed):
    n_feasible = 0
    for p in _random_points(400, seed=1):
        r = ref.roofline(p, expert_coverage=coverage, power=power, relaxed=relaxed)
        if not r["feasible"]:
            continue
        n_feasible += 1
        assert math.isclose(r["energy_per_token"] * r["tok_per_watt"], 1.0, rel_tol=1e-12)
        assert math.isclose(
            r["throughput"], r["concurrency"] / (r["iter_time"] * p["tp"]), rel_tol=1e-12
        )
        assert r["iter_time"] >= max(r["t_mem"], r["t_comp"])
        assert r["bound"] == (1.0 if r["t_comp"] > r["t_mem"] else 0.0)
    assert n_feasible > 50
    for prof in (H100_PROFILE,):
        for w in (1000, 4096, 12345, 65536):
            r = ref.calibrated({**prof, "context": w})
            assert math.isclose(r["energy_per_token"] * r["tok_per_watt"], 1.0, rel_tol=1e-12)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("relaxed", [False, True])
def test_concurrency_non_increasing_in_context(name, relaxed):
    contexts = sorted({*range(1, 600, 7), *(2**e for e in range(4, 19)), 100_000, 131_071})
    prev = math.inf
    for w in contexts:
        r = ref.roofline(point(MODELS[name], w, tp=8, mem_capacity=141e9), relaxed=relaxed)
        b = r["concurrency"] if r["feasible"] else 0.0
        assert b <= prev, (w, b, prev)
        prev = b
    prev = math.inf
    for w in contexts:
        r = ref.calibrated({**H100_PROFILE, "context": w})
        n = r["concurrency"] if r["feasible"] else 0.0
        assert n <= prev, (w, n, prev)
        prev = n


@pytest.mark.parametrize("name", list(MODELS))
def test_relaxed_bmax_times_w_constant(name):
    base = None
    for w in (1, 100, 1000, 4096, 4097, 10_000, 65536, 1_000_000):
        r = ref.roofline(
            point(MODELS[name], w, tp=8, mem_capacity=141e9, w_bytes=1.0), relaxed=True
        )
        assert r["feasible"]
        expected = r["kv_budget"] / r["kv_tok_gpu"]
        assert math.isclose(r["b_max"] * w, expected, rel_tol=1e-12)
        base = expected if base is None else base
        assert math.isclose(r["b_max"] * w, base, rel_tol=1e-12)


def test_relaxed_matches_floor_version_at_block_multiples_within_one():
    for w in (256, 4096, 32768):
        exact = ref.roofline(point(LLAMA_8B, w))
        relaxed = ref.roofline(point(LLAMA_8B, w), relaxed=True)
        assert 0 <= relaxed["b_max"] - exact["b_max"] < 1


# Dense Llama-3.1-8B on one H100 at W = 128: B = 1 is weight-streaming (memory) bound, a large
# batch is compute bound (2*B*active FLOPs grow while the weights are streamed once).
def test_bound_flips_to_compute_at_large_batch_small_context():
    small = ref.roofline(point(LLAMA_8B, 128, batch=1))
    large = ref.roofline(point(LLAMA_8B, 128, batch=2048))
    assert small["feasible"] and large["feasible"]
    assert small["bound"] == 0.0
    assert large["bound"] == 1.0
    # and at long context the same batch size (when it fits) stays memory bound
    long_ = ref.roofline(
        point(LLAMA_8B, 8192, batch=int(ref.roofline(point(LLAMA_8B, 8192))["b_max"]))
    )
    assert long_["bound"] == 0.0
    # flips exactly once along batch
    bounds = [ref.roofline(point(LLAMA_8B, 128, batch=b))["bound"] for b in range(1, 3000, 37)]
    assert bounds == sorted(bounds)


def test_infeasible_keeps_deployment_fields():
    deployment = ("kv_budget", "weights_gpu", "kv_tok_gpu")
    cases = [
        point(LLAMA_8B, 4096, flops=0.0),  # dtype unsupported
        point(LLAMA_405B, 4096),  # 810 GB of bf16 weights on one 80 GB GPU
        point(LLAMA_8B, 4096, batch=10**6),  # batch > B_max
        point(LLAMA_8B, 10**7),  # not one sequence fits
        point(LLAMA_8B, 131073, context_limit=1),  # beyond max_position
    ]
    for p in cases:
        r = ref.roofline(p)
        assert r["feasible"] is False
        for k, v in r.items():
            if k in deployment:
                assert math.isfinite(v)
            elif k != "feasible":
                assert math.isnan(v), k
    assert ref.roofline(point(LLAMA_405B, 4096))["kv_budget"] < 0
    # the context limit is off by default
    assert ref.roofline(point(LLAMA_8B, 131073))["feasible"]
    # relaxed: only flops == 0 and kv_budget <= 0 give nan
    assert not ref.roofline(point(LLAMA_8B, 4096, flops=0.0), relaxed=True)["feasible"]
    assert not ref.roofline(point(LLAMA_405B, 4096), relaxed=True)["feasible"]
    assert ref.roofline(point(LLAMA_8B, 10**7), relaxed=True)["feasible"]


def test_kv_per_token_gqa_and_mla():
    # GQA: 2 * layers * head_dim * bytes * max(kv_heads / tp, 1)
    assert ref.roofline(point(LLAMA_70B, 4096, tp=1))["kv_tok_gpu"] == 2 * 80 * 128 * 2 * 8
    assert ref.roofline(point(LLAMA_70B, 4096, tp=8))["kv_tok_gpu"] == 2 * 80 * 128 * 2
    assert ref.roofline(point(LLAMA_70B, 4096, tp=16))["kv_tok_gpu"] == 2 * 80 * 128 * 2
    # MLA: the latent is replicated, so tp does not divide it
    for tp in (8, 16):
        r = ref.roofline(point(DEEPSEEK_V3, 4096, tp=tp, mem_capacity=141e9, w_bytes=1.0))
        assert r["kv_tok_gpu"] == 61 * (512 + 64) * 2


def test_expert_coverage():
    p = point(QWEN3_30B, 4096, batch=1)
    ind = ref.roofline(p, expert_coverage="independent")
    act = ref.roofline(p, expert_coverage="active")
    assert math.isclose(ind["streamed"], act["streamed"], rel_tol=1e-12)  # 1-(1-f)^1 = f
    c = ref.param_counts(QWEN3_30B)
    big = ref.roofline(
        point(QWEN3_30B, 1024, batch=256, mem_capacity=141e9), expert_coverage="independent"
    )
    assert big["feasible"]
    all_experts = (c["dense"] - c["input_table"] + c["expert"]) * 2.0
    assert big["streamed"] < all_experts
    assert math.isclose(big["streamed"], all_experts, rel_tol=1e-6)


def test_power_models_bounds():
    for p in _random_points(200, seed=2):
        r = ref.roofline(p, power="activity")
        if r["feasible"]:
            assert 0.43 * p["tdp"] - 1e-9 <= r["power"] <= 0.86 * p["tdp"] + 1e-9
        r = ref.roofline(p, power="logistic")
        if r["feasible"]:
            assert p["power_idle"] <= r["power"] <= p["power_nominal"]

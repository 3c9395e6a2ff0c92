"""The packaged catalogs, their validation, and the Hugging Face config importer."""

import dataclasses
import json
import math
import tomllib
from pathlib import Path

import pytest

from sweep import catalog
from sweep.catalog import (
    GPU,
    Model,
    gpu_from_dict,
    import_model,
    model_from_dict,
    model_from_hf_config,
    model_from_spec_table,
    model_to_toml,
    profile_from_dict,
)
from sweep.errors import SpecError

DATA = Path(__file__).parent / "data"

GPU_KEYS = {"a100-sxm", "h100-sxm", "h200-sxm", "b200", "gb200", "b300", "gb300",
            "mi300x", "mi325x", "mi355x", "l40s"}  # fmt: skip
MODEL_KEYS = {"llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "qwen3-8b", "qwen3-32b",
              "qwen3-30b-a3b", "qwen3-235b-a22b", "mixtral-8x7b", "deepseek-v3"}  # fmt: skip
PROFILE_KEYS = {"h100", "a100", "a10g"}

MODEL_FIELDS = ["name", "n_layers", "hidden", "n_heads", "n_kv_heads", "head_dim",
                "intermediate", "vocab", "tied_embeddings", "n_experts", "experts_per_token",
                "moe_intermediate", "n_shared_experts", "n_dense_layers", "q_lora_rank",
                "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                "max_position", "source"]  # fmt: skip


def field_names(obj) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)]


# ------------------------------------------------------------------------------------ keys


def test_exact_key_sets():
    assert set(catalog.load_gpus()) == GPU_KEYS
    assert set(catalog.load_models()) == MODEL_KEYS
    assert set(catalog.load_profiles()) == PROFILE_KEYS


def test_every_entry_cites_a_source():
    for entries in (catalog.load_gpus(), catalog.load_models(), catalog.load_profiles()):
        for key, e in entries.items():
            assert e.key == key
            assert e.source.strip(), key
    for key, m in catalog.load_models().items():
        assert m.source.startswith("https://huggingface.co/") and m.source.endswith(
            "/config.json"
        ), key


def test_dataclass_fields_are_the_toml_fields():
    m = catalog.load_models()["llama-3.1-8b"]
    assert field_names(m) == ["key", *MODEL_FIELDS]
    raw = tomllib.loads((Path(catalog.__file__).parent / "data" / "models.toml").read_text())
    for key, table in raw.items():
        assert list(table) == MODEL_FIELDS, key  # every field given explicitly, in order
    g = catalog.load_gpus()["h100-sxm"]
    assert {"power_source", "price_per_hour", "notes"} <= set(field_names(g))
    p = catalog.load_profiles()["h100"]
    assert field_names(p) == ["key", "name", "model", "tp", "w_s", "h_s", "calib_ctx",
                              "max_slots", "kv_blocks", "blk", "power_idle", "power_nominal",
                              "power_k", "power_x0", "source"]  # fmt: skip


def test_types():
    for g in catalog.load_gpus().values():
        for f in ("mem_bw", "mem_capacity", "flops_bf16", "flops_fp8", "flops_fp4", "tdp",
                  "power_idle", "power_nominal", "power_k", "power_x0"):  # fmt: skip
            assert type(getattr(g, f)) is float, (g.key, f)
        assert g.price_per_hour is None or type(g.price_per_hour) is float
    for m in catalog.load_models().values():
        for f in MODEL_FIELDS:
            want = str if f in ("name", "source") else bool if f == "tied_embeddings" else int
            assert type(getattr(m, f)) is want, (m.key, f)


def test_loaders_return_fresh_copies():
    gpus = catalog.load_gpus()
    del gpus["h100-sxm"]
    gpus["fake"] = None
    assert "h100-sxm" in catalog.load_gpus() and "fake" not in catalog.load_gpus()
    models = catalog.load_models()
    models.clear()
    assert set(catalog.load_models()) == MODEL_KEYS
    with pytest.raises(dataclasses.FrozenInstanceError):
        catalog.load_gpus()["b200"].mem_bw = 1.0


def test_lookup_is_exact():
    # A peer tool silently mapped a10g to the L40S entry: names must match exactly.
    assert catalog.get_gpu("l40s").key == "l40s"
    with pytest.raises(SpecError, match="a10g") as e:
        catalog.get_gpu("a10g")
    assert "l40s" in str(e.value)  # the known keys are listed
    with pytest.raises(SpecError, match="H100-SXM"):
        catalog.get_gpu("H100-SXM")
    with pytest.raises(SpecError, match="llama-3-8b"):
        catalog.get_model("llama-3-8b")
    assert catalog.get_profile("a10g").tp == 1


# ------------------------------------------------------------------------------------ GPUs

# Datasheet figures, dense, SI (see the `source` of each entry in sweep/data/gpus.toml).
GPU_FIGURES = {
    # key: (mem_bw TB/s, mem GB, bf16 TF, fp8 TF, fp4 TF, tdp W)
    "a100-sxm": (2.039, 80, 312, 0, 0, 400),
    "h100-sxm": (3.35, 80, 989.5, 1979, 0, 700),
    "h200-sxm": (4.8, 141, 989.5, 1979, 0, 700),
    "b200": (8, 180, 2250, 4500, 9000, 1000),
    "gb200": (8, 186, 2500, 5000, 10000, 1200),
    "b300": (8, 288, 2250, 4500, 13500, 1100),
    "gb300": (8, 288, 2500, 5000, 15000, 1400),
    "mi300x": (5.3, 192, 1307.4, 2614.9, 0, 750),
    "mi325x": (6.0, 256, 1307.4, 2614.9, 0, 1000),
    "mi355x": (8, 288, 2516.6, 5033.2, 10066.3, 1400),
    "l40s": (0.864, 48, 362.05, 733, 0, 350),
}


@pytest.mark.parametrize("key", sorted(GPU_FIGURES))
def test_gpu_figures(key):
    g = catalog.get_gpu(key)
    bw, mem, bf16, fp8, fp4, tdp = GPU_FIGURES[key]
    assert g.mem_bw == pytest.approx(bw * 1e12, rel=1e-12)
    assert g.mem_capacity == pytest.approx(mem * 1e9, rel=1e-12)
    assert g.flops_bf16 == pytest.approx(bf16 * 1e12, rel=1e-12)
    assert g.flops_fp8 == pytest.approx(fp8 * 1e12, rel=1e-12)
    assert g.flops_fp4 == pytest.approx(fp4 * 1e12, rel=1e-12)
    assert g.tdp == tdp


def test_h100_bandwidth_is_the_sxm_figure():
    # A peer tool used 3.07 TB/s for H100 SXM; the datasheet says 3.35 TB/s.
    assert catalog.get_gpu("h100-sxm").mem_bw == 3.35e12


def test_unsupported_dtypes_are_zero():
    # FIELD-NOTES: Hopper, Ampere, Ada and MI300X/MI325X have no FP4; A100 has no FP8.
    gpus = catalog.load_gpus()
    for key in ("a100-sxm", "h100-sxm", "h200-sxm", "l40s", "mi300x", "mi325x"):
        assert gpus[key].flops_fp4 == 0.0, key
    assert gpus["a100-sxm"].flops_fp8 == 0.0
    for key in ("b200", "gb200", "b300", "gb300", "mi355x"):
        assert gpus[key].flops_fp4 > 0, key
    for g in gpus.values():
        assert g.flops_bf16 > 0
        assert g.flops("bf16") == g.flops_bf16 and g.flops("fp4") == g.flops_fp4
    with pytest.raises(SpecError, match="dtype"):
        gpus["b200"].flops("int8")


def test_dense_flops_ratios():
    # Dense FP8 is 2x dense BF16 on every GPU whose datasheet prints it so (MI300X/MI325X round
    # to 1307.4 / 2614.9). The L40S datasheet prints 362.05 (BF16) and 733 (FP8) dense: 2.02x.
    gpus = catalog.load_gpus()
    for g in gpus.values():
        if g.flops_fp8 and g.key != "l40s":
            assert g.flops_fp8 == pytest.approx(2 * g.flops_bf16, rel=1e-4), g.key
    assert gpus["l40s"].flops_fp8 / gpus["l40s"].flops_bf16 == pytest.approx(2, rel=0.02)
    # FP4 is 2x FP8 on Blackwell and MI355X, 3x on Blackwell Ultra (dense FP4 up 1.5x).
    for key in ("b200", "gb200", "mi355x"):
        assert gpus[key].flops_fp4 == pytest.approx(2 * gpus[key].flops_fp8, rel=1e-4), key
    for key in ("b300", "gb300"):
        assert gpus[key].flops_fp4 == pytest.approx(3 * gpus[key].flops_fp8, rel=1e-12), key
    # Sanity against a sparse figure slipping in: no GPU here exceeds 20 PFLOP/s dense FP4.
    assert max(g.flops_fp4 for g in gpus.values()) <= 20e15


def test_uncertain_figures_say_so():
    gpus = catalog.load_gpus()
    assert "1100-1400" in gpus["b300"].notes
    for key in ("b200", "gb200", "b300", "gb300"):
        assert gpus[key].notes, key


def test_power_curves():
    # Only the H100 curve is measured: ML.ENERGY v3.0 / GPU-to-Grid (arXiv 2602.05116) as fitted
    # by inference-fleet-sim (arXiv 2603.16054). Others are projected (MODEL.md section 2).
    for g in catalog.load_gpus().values():
        if g.key == "h100-sxm":
            assert g.power_source == "measured"
            assert (g.power_idle, g.power_nominal, g.power_k, g.power_x0) == (300, 600, 1.0, 4.2)
        else:
            assert g.power_source == "projected", g.key
            assert g.power_idle == pytest.approx(0.43 * g.tdp, rel=1e-12)
            assert g.power_nominal == pytest.approx(0.86 * g.tdp, rel=1e-12)
            assert (g.power_k, g.power_x0) == (1.0, 4.2)


def test_h100_gpu_curve_matches_the_h100_profile():
    g, p = catalog.get_gpu("h100-sxm"), catalog.get_profile("h100")
    assert (g.power_idle, g.power_nominal, g.power_k, g.power_x0) == (
        p.power_idle,
        p.power_nominal,
        p.power_k,
        p.power_x0,
    )


# -------------------------------------------------------------------------------- profiles

# MODEL.md section 1, the published inference-fleet-sim calibrations (arXiv 2603.16054):
# profile: (model, tp, W_s, H_s, calib_ctx, max_slots, kv_blocks, P_idle, P_nom, k, x0)
MODEL_MD_PROFILES = {
    "h100": ("Llama-3.1-70B", 8, 0.0040, 0.00032, 8192, 256, 65536, 300, 600, 1.0, 4.2),
    "a100": ("Llama-3.1-70B", 8, 0.0080, 0.00065, 8192, 128, 65536, 175, 385, 1.0, 2.5),
    "a10g": ("7B class", 1, 0.012, 0.00090, 8192, 64, 32768, 75, 120, 0.7, 3.0),
}


@pytest.mark.parametrize("key", sorted(MODEL_MD_PROFILES))
def test_profiles_equal_model_md_table(key):
    p = catalog.get_profile(key)
    got = (p.model, p.tp, p.w_s, p.h_s, p.calib_ctx, p.max_slots, p.kv_blocks,
           p.power_idle, p.power_nominal, p.power_k, p.power_x0)  # fmt: skip
    assert got == MODEL_MD_PROFILES[key]
    assert p.blk == 16


def test_h100_profile_reproduces_the_paper_headline():
    # MODEL.md section 1 check / arXiv 2603.17280 abstract: at fill 0.5 an H100 holds 256
    # sequences at W = 4096 (17.6 tok/W) and 16 at W = 65536 (1.50 tok/W). Written out here
    # only to check the catalog's numbers; the kernels compute this for real.
    p = catalog.get_profile("h100")

    def tok_per_watt(w):
        n = min(p.max_slots * p.calib_ctx // w, p.kv_blocks // math.ceil(w / p.blk))
        t_iter = p.w_s + p.h_s * (0.5 * w / p.calib_ctx) * n
        power = p.power_idle + (p.power_nominal - p.power_idle) / (
            1 + math.exp(-p.power_k * (math.log2(max(n, 1)) - p.power_x0))
        )
        return n, n / t_iter / power

    n, tpw = tok_per_watt(4096)
    assert n == 256 and round(tpw, 1) == 17.6
    n, tpw = tok_per_watt(65536)
    assert n == 16 and round(tpw, 2) == 1.50


# ---------------------------------------------------------------------------------- models


def test_model_conventions():
    for m in catalog.load_models().values():
        if m.n_experts == 0:
            assert not m.is_moe
            assert (m.experts_per_token, m.moe_intermediate, m.n_shared_experts) == (0, 0, 0)
            assert m.n_dense_layers == m.n_layers
        else:
            assert m.is_moe and 1 <= m.experts_per_token <= m.n_experts
            assert 0 <= m.n_dense_layers < m.n_layers
        if not m.is_mla:
            assert (m.q_lora_rank, m.kv_lora_rank, m.qk_nope_head_dim, m.qk_rope_head_dim,
                    m.v_head_dim) == (0, 0, 0, 0, 0)  # fmt: skip
    ds = catalog.get_model("deepseek-v3")
    assert ds.is_mla and ds.head_dim == ds.qk_nope_head_dim + ds.qk_rope_head_dim == 192
    assert [k for k, m in catalog.load_models().items() if m.is_mla] == ["deepseek-v3"]


def test_published_config_values():
    # Spot checks against the published config.json files (the `source` of each entry).
    m = catalog.load_models()
    assert (m["llama-3.1-70b"].n_layers, m["llama-3.1-70b"].intermediate) == (80, 28672)
    assert (m["llama-3.1-405b"].n_layers, m["llama-3.1-405b"].hidden) == (126, 16384)
    assert m["llama-3.1-405b"].intermediate == 53248
    assert (m["qwen3-32b"].n_heads, m["qwen3-32b"].head_dim, m["qwen3-32b"].hidden) == (
        64,
        128,
        5120,
    )
    q = m["qwen3-235b-a22b"]
    assert (q.n_layers, q.n_kv_heads, q.n_experts, q.moe_intermediate) == (94, 4, 128, 1536)
    mx = m["mixtral-8x7b"]
    assert (mx.n_experts, mx.experts_per_token, mx.moe_intermediate, mx.n_dense_layers) == (
        8,
        2,
        14336,
        0,
    )
    ds = m["deepseek-v3"]
    assert (ds.n_layers, ds.hidden, ds.n_heads, ds.n_kv_heads) == (61, 7168, 128, 128)
    assert (ds.n_experts, ds.experts_per_token, ds.n_shared_experts, ds.n_dense_layers) == (
        256,
        8,
        1,
        3,
    )
    assert (ds.q_lora_rank, ds.kv_lora_rank, ds.v_head_dim) == (1536, 512, 128)
    assert (ds.vocab, ds.max_position, ds.intermediate, ds.moe_intermediate) == (
        129280,
        163840,
        18432,
        2048,
    )


FIXTURES = ["llama-3.1-8b", "qwen3-30b-a3b", "mixtral-8x7b", "deepseek-v3"]


@pytest.mark.parametrize("key", FIXTURES)
def test_hf_config_reproduces_the_catalog(key):
    config = json.loads((DATA / key / "config.json").read_text())
    imported = model_from_hf_config(config, key, source="fixture")
    entry = catalog.get_model(key)
    for f in MODEL_FIELDS:
        if f in ("name", "source"):
            continue
        assert getattr(imported, f) == getattr(entry, f), (key, f)
    assert imported.source == "fixture" and imported.key == key


@pytest.mark.parametrize("key", FIXTURES)
def test_import_model_reads_a_local_file(key):
    path = DATA / key / "config.json"
    m = import_model(path)
    assert m.key == key  # from the folder name (the fixtures have no _name_or_path)
    assert m.source == str(path)
    assert dataclasses.replace(m, name="", source="") == dataclasses.replace(
        catalog.get_model(key), name="", source=""
    )
    assert import_model(path.parent, key="mine").key == "mine"  # a folder means its config


def test_import_model_key_from_name_or_path(tmp_path):
    config = json.loads((DATA / "llama-3.1-8b" / "config.json").read_text())
    config["_name_or_path"] = "meta-llama/Llama-3.1-8B"
    (tmp_path / "config.json").write_text(json.dumps(config))
    m = import_model(tmp_path / "config.json")
    assert (m.key, m.name) == ("llama-3.1-8b", "Llama-3.1-8B")
    # a Hugging Face cache snapshot folder is a hash: the repo name is used instead
    snap = tmp_path / "models--Qwen--Qwen3-30B-A3B" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text((DATA / "qwen3-30b-a3b" / "config.json").read_text())
    assert import_model(snap / "config.json").key == "qwen3-30b-a3b"


def test_import_model_bad_files(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        import_model(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        import_model(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(SpecError, match="JSON object"):
        import_model(tmp_path / "list.json")


def test_model_to_toml_round_trips():
    for m in catalog.load_models().values():
        text = model_to_toml(m)
        quoted = f'"{m.key}"' if "." in m.key else m.key  # keys with dots are quoted
        assert text.startswith(f"[models.{quoted}]\n")
        table = tomllib.loads(text)["models"][m.key]
        assert model_from_dict(m.key, table) == m
    m = dataclasses.replace(catalog.get_model("qwen3-8b"), key="plain_key-1", name='a "q"')
    assert model_to_toml(m).startswith("[models.plain_key-1]\n")
    assert (
        model_from_dict("plain_key-1", tomllib.loads(model_to_toml(m))["models"]["plain_key-1"])
        == m
    )


def test_spec_table_with_config(tmp_path):
    (tmp_path / "cfgs" / "mx").mkdir(parents=True)
    (tmp_path / "cfgs" / "mx" / "config.json").write_text(
        (DATA / "mixtral-8x7b" / "config.json").read_text()
    )
    m = model_from_spec_table("my-mixtral", {"config": "cfgs/mx/config.json"}, tmp_path)
    assert m.key == "my-mixtral" and m.n_experts == 8 and m.name == "my-mixtral"
    assert m.source == str(tmp_path / "cfgs" / "mx" / "config.json")
    m2 = model_from_spec_table("x", {"config": "cfgs/mx", "name": "Mx", "source": "s"}, tmp_path)
    assert (m2.name, m2.source, m2.n_layers) == ("Mx", "s", 32)
    # a plain table of catalog fields works too
    plain = {f: getattr(m, f) for f in MODEL_FIELDS}
    assert model_from_spec_table("my-mixtral", plain, tmp_path) == m
    with pytest.raises(SpecError, match=r"models\.x\.n_layers"):
        model_from_spec_table("x", {"config": "cfgs/mx", "n_layers": 2}, tmp_path)
    with pytest.raises(SpecError, match=r"models\.x\.config") as e:
        model_from_spec_table("x", {"config": "missing.json"}, tmp_path)
    assert "missing.json" in str(e.value)
    with pytest.raises(SpecError, match=r"models\.x\.config"):
        model_from_spec_table("x", {"config": 3}, tmp_path)
    cfg = json.loads((DATA / "mixtral-8x7b" / "config.json").read_text())
    del cfg["hidden_size"]
    (tmp_path / "broken.json").write_text(json.dumps(cfg))
    with pytest.raises(SpecError, match=r"models\.x\.config\.hidden_size") as e:
        model_from_spec_table("x", {"config": "broken.json"}, tmp_path)
    assert "broken.json" in str(e.value)


# ------------------------------------------------------------------------ HF config layouts


def qwen_moe_config(**changes):
    config = json.loads((DATA / "qwen3-30b-a3b" / "config.json").read_text())
    config.update(changes)
    return config


def test_hf_defaults():
    config = json.loads((DATA / "llama-3.1-8b" / "config.json").read_text())
    for k in ("num_key_value_heads", "tie_word_embeddings"):
        del config[k]
    m = model_from_hf_config(config, "x")
    assert m.n_kv_heads == m.n_heads == 32 and m.tied_embeddings is False
    assert m.head_dim == 4096 // 32
    config["num_key_value_heads"] = None  # null means absent
    assert model_from_hf_config(config, "x").n_kv_heads == 32
    config["head_dim"] = 64
    assert model_from_hf_config(config, "x").head_dim == 64


def test_hf_qwen_moe_leading_dense_layers():
    m = model_from_hf_config(qwen_moe_config(mlp_only_layers=[0, 1]), "x")
    assert m.n_dense_layers == 2 and m.n_experts == 128
    m = model_from_hf_config(qwen_moe_config(mlp_only_layers=list(range(48))), "x")
    assert m.n_experts == 0 and m.n_dense_layers == 48  # no MoE layer left: a dense model
    assert m.moe_intermediate == 0 and m.experts_per_token == 0


def test_hf_qwen_moe_interleaved_layout_is_refused():
    with pytest.raises(SpecError, match=r"config\.decoder_sparse_step") as e:
        model_from_hf_config(qwen_moe_config(decoder_sparse_step=2), "x")
    assert "leading dense layers" in str(e.value)
    with pytest.raises(SpecError, match=r"config\.mlp_only_layers"):
        model_from_hf_config(qwen_moe_config(mlp_only_layers=[0, 5]), "x")
    with pytest.raises(SpecError, match=r"config\.mlp_only_layers"):
        model_from_hf_config(qwen_moe_config(mlp_only_layers=[48]), "x")


def test_hf_qwen2_moe_shared_expert():
    config = qwen_moe_config(model_type="qwen2_moe", shared_expert_intermediate_size=4 * 768)
    assert model_from_hf_config(config, "x").n_shared_experts == 4
    config["shared_expert_intermediate_size"] = 1000
    with pytest.raises(SpecError, match="shared_expert_intermediate_size"):
        model_from_hf_config(config, "x")


def test_hf_deepseek_variants():
    config = json.loads((DATA / "deepseek-v3" / "config.json").read_text())
    config["q_lora_rank"] = None  # DeepSeek-V2-Lite style: full-rank queries
    m = model_from_hf_config(config, "x")
    assert m.q_lora_rank == 0 and m.is_mla and m.head_dim == 192
    config["moe_layer_freq"] = 2
    with pytest.raises(SpecError, match=r"config\.moe_layer_freq"):
        model_from_hf_config(config, "x")


def test_hf_sliding_window_is_refused():
    config = json.loads((DATA / "mixtral-8x7b" / "config.json").read_text())
    config["sliding_window"] = 4096
    with pytest.raises(SpecError, match=r"config\.sliding_window"):
        model_from_hf_config(config, "x")
    config["use_sliding_window"] = False  # Qwen2.5 style: configured but off
    assert model_from_hf_config(config, "x").n_experts == 8


def test_hf_model_type():
    config = json.loads((DATA / "llama-3.1-8b" / "config.json").read_text())
    del config["model_type"]  # architectures is enough
    assert model_from_hf_config(config, "x").n_layers == 32
    config["model_type"] = "gpt2"
    with pytest.raises(SpecError, match=r"config\.model_type") as e:
        model_from_hf_config(config, "x")
    assert "llama" in str(e.value)  # lists what is supported
    with pytest.raises(SpecError, match="JSON object"):
        model_from_hf_config([1], "x")


@pytest.mark.parametrize(
    ("fixture", "field"),
    [
        ("llama-3.1-8b", "hidden_size"),
        ("llama-3.1-8b", "num_hidden_layers"),
        ("llama-3.1-8b", "vocab_size"),
        ("llama-3.1-8b", "max_position_embeddings"),
        ("mixtral-8x7b", "num_local_experts"),
        ("qwen3-30b-a3b", "moe_intermediate_size"),
        ("deepseek-v3", "kv_lora_rank"),
        ("deepseek-v3", "num_experts_per_tok"),
    ],
)
def test_hf_missing_field(fixture, field):
    config = json.loads((DATA / fixture / "config.json").read_text())
    del config[field]
    with pytest.raises(SpecError, match=rf"config\.{field}: missing"):
        model_from_hf_config(config, "x")


def test_hf_bad_values_name_the_config_field():
    config = json.loads((DATA / "llama-3.1-8b" / "config.json").read_text())
    with pytest.raises(SpecError, match=r"config\.hidden_size: must be an integer"):
        model_from_hf_config({**config, "hidden_size": "4096"}, "x")
    with pytest.raises(SpecError, match=r"config\.num_hidden_layers: must be > 0"):
        model_from_hf_config({**config, "num_hidden_layers": 0}, "x")
    with pytest.raises(SpecError, match=r"config\.num_key_value_heads"):
        model_from_hf_config({**config, "num_key_value_heads": 5}, "x")
    with pytest.raises(SpecError, match=r"config\.tie_word_embeddings"):
        model_from_hf_config({**config, "tie_word_embeddings": "no"}, "x")
    mixtral = json.loads((DATA / "mixtral-8x7b" / "config.json").read_text())
    with pytest.raises(SpecError, match=r"config\.num_experts_per_tok") as e:
        model_from_hf_config({**mixtral, "num_experts_per_tok": 9}, "x")
    assert "n_experts (8)" in str(e.value)


# ------------------------------------------------------------------------ validation paths


def h100_table(**changes):
    table = {
        "name": "H",
        "mem_bw": 3.35e12,
        "mem_capacity": 80e9,
        "flops_bf16": 989.5e12,
        "flops_fp8": 1979e12,
        "flops_fp4": 0,
        "tdp": 700,
        "source": "test",
    }
    table.update(changes)
    return {k: v for k, v in table.items() if v is not None}


def model_table(**changes):
    table = {f: getattr(catalog.get_model("qwen3-30b-a3b"), f) for f in MODEL_FIELDS}
    table.update(changes)
    return {k: v for k, v in table.items() if v is not None}


def profile_table(**changes):
    p = catalog.get_profile("a10g")
    table = {f: getattr(p, f) for f in field_names(p) if f != "key"}
    table.update(changes)
    return {k: v for k, v in table.items() if v is not None}


def test_gpu_from_dict_projects_or_keeps_the_curve():
    g = gpu_from_dict("g", h100_table())
    assert g.power_source == "projected" and g.power_idle == pytest.approx(301.0)
    assert isinstance(g.tdp, float) and g.price_per_hour is None and g.name == "H"
    curve = {"power_idle": 300, "power_nominal": 600, "power_k": 1, "power_x0": 4.2}
    g = gpu_from_dict("g", h100_table(**curve, price_per_hour=2.5))
    assert g.power_source == "measured" and g.power_nominal == 600.0 and g.price_per_hour == 2.5
    # a full entry (as dataclasses.asdict gives it, less the key) rebuilds the same GPU
    h = catalog.get_gpu("b200")
    table = {k: v for k, v in dataclasses.asdict(h).items() if k != "key"}
    assert gpu_from_dict("b200", table) == h
    assert gpu_from_dict("g", {k: v for k, v in h100_table().items() if k != "name"}).name == "g"


@pytest.mark.parametrize(
    ("table", "field", "text"),
    [
        (h100_table(mem_bandwidth=1e12), "gpus.g.mem_bandwidth", "unknown field"),
        (h100_table(mem_bw=None), "gpus.g.mem_bw", "missing required field"),
        (h100_table(tdp=None), "gpus.g.tdp", "missing required field"),
        (h100_table(mem_bw="3.35 TB/s"), "gpus.g.mem_bw", "must be a number"),
        (h100_table(flops_fp4=True), "gpus.g.flops_fp4", "must be a number"),
        (h100_table(name=3), "gpus.g.name", "must be a string"),
        (h100_table(mem_bw=-1.0), "gpus.g.mem_bw", "must be > 0"),
        (h100_table(mem_capacity=0), "gpus.g.mem_capacity", "must be > 0"),
        (h100_table(tdp=-700), "gpus.g.tdp", "must be > 0"),
        (h100_table(flops_fp8=-1), "gpus.g.flops_fp8", "must be >= 0"),
        (h100_table(flops_bf16=0, flops_fp8=0), "gpus.g.flops_bf16", "at least one"),
        (h100_table(mem_bw=float("inf")), "gpus.g.mem_bw", "finite"),
        (h100_table(power_idle=300), "gpus.g.power_nominal", "all of power_idle"),
        (
            h100_table(power_idle=600, power_nominal=300, power_k=1, power_x0=4.2),
            "gpus.g.power_nominal",
            "must be >= power_idle",
        ),
        (
            h100_table(power_idle=300, power_nominal=600, power_k=-1, power_x0=4.2),
            "gpus.g.power_k",
            "must be >= 0",
        ),
        (h100_table(power_source="guessed"), "gpus.g.power_source", "measured, projected"),
        (h100_table(power_source="measured"), "gpus.g.power_source", "needs power_idle"),
        (h100_table(price_per_hour=-1), "gpus.g.price_per_hour", ">= 0"),
        (h100_table(price_per_hour="cheap"), "gpus.g.price_per_hour", "must be a number"),
    ],
)
def test_gpu_validation(table, field, text):
    with pytest.raises(SpecError) as e:
        gpu_from_dict("g", table)
    assert e.value.field == field
    assert field in str(e.value) and text in str(e.value)


def test_where_prefixes_the_field():
    with pytest.raises(SpecError, match=r"^spec\.gpus\.g\.mem_bw: "):
        gpu_from_dict("g", h100_table(mem_bw=-1), where="spec.gpus")
    with pytest.raises(SpecError, match=r"^gpus\.g: must be a table"):
        gpu_from_dict("g", [1, 2])


def test_model_from_dict_defaults():
    m = model_from_dict(
        "tiny",
        {"n_layers": 2, "hidden": 64, "n_heads": 4, "intermediate": 128, "vocab": 100,
         "max_position": 1024},
    )  # fmt: skip
    assert (m.name, m.n_kv_heads, m.head_dim, m.n_dense_layers, m.n_experts) == (
        "tiny",
        4,
        16,
        2,
        0,
    )
    moe = model_table(n_dense_layers=None, head_dim=None)
    m = model_from_dict("m", moe)
    assert m.n_dense_layers == 0 and m.head_dim == 2048 // 32


@pytest.mark.parametrize(
    ("table", "field", "text"),
    [
        (model_table(n_layer=4), "models.m.n_layer", "unknown field"),
        (model_table(n_layers=None), "models.m.n_layers", "missing required field"),
        (model_table(hidden=None), "models.m.hidden", "missing required field"),
        (model_table(max_position=None), "models.m.max_position", "missing required field"),
        (model_table(n_layers=48.0), "models.m.n_layers", "must be an integer"),
        (model_table(n_layers=True), "models.m.n_layers", "must be an integer"),
        (model_table(tied_embeddings=0), "models.m.tied_embeddings", "true or false"),
        (model_table(n_layers=-48), "models.m.n_layers", "must be > 0"),
        (model_table(hidden=0), "models.m.hidden", "must be > 0"),
        (model_table(vocab=-1), "models.m.vocab", "must be > 0"),
        (model_table(n_experts=-1), "models.m.n_experts", "must be >= 0"),
        (model_table(n_kv_heads=3), "models.m.n_kv_heads", "must divide n_heads"),
        (model_table(n_kv_heads=64), "models.m.n_kv_heads", "must divide n_heads"),
        (model_table(experts_per_token=129), "models.m.experts_per_token", "n_experts (128)"),
        (model_table(experts_per_token=0), "models.m.experts_per_token", "between 1 and"),
        (model_table(moe_intermediate=0), "models.m.moe_intermediate", "must be > 0"),
        (model_table(n_dense_layers=49), "models.m.n_dense_layers", "<= n_layers (48)"),
        (model_table(n_dense_layers=48), "models.m.n_dense_layers", "at least one MoE"),
        (
            model_table(n_experts=0, experts_per_token=0, moe_intermediate=0),
            "models.m.n_dense_layers",
            "must equal n_layers",
        ),
        (model_table(n_experts=0), "models.m.experts_per_token", "dense model"),
        (model_table(n_dense_layers=1, intermediate=0), "models.m.intermediate", "dense-FFN"),
        (model_table(q_lora_rank=64), "models.m.q_lora_rank", "without MLA"),
        (model_table(kv_lora_rank=512), "models.m.v_head_dim", "must be > 0"),
        (
            model_table(head_dim=None, hidden=100, n_heads=32),
            "models.m.head_dim",
            "give head_dim",
        ),
    ],
)
def test_model_validation(table, field, text):
    with pytest.raises(SpecError) as e:
        model_from_dict("m", table)
    assert e.value.field == field
    assert field in str(e.value) and text in str(e.value)


@pytest.mark.parametrize(
    ("table", "field", "text"),
    [
        (profile_table(w=0.1), "profiles.p.w", "unknown field"),
        (profile_table(w_s=None), "profiles.p.w_s", "missing required field"),
        (profile_table(tp=1.5), "profiles.p.tp", "must be an integer"),
        (profile_table(h_s="fast"), "profiles.p.h_s", "must be a number"),
        (profile_table(tp=0), "profiles.p.tp", "must be > 0"),
        (profile_table(kv_blocks=-1), "profiles.p.kv_blocks", "must be > 0"),
        (profile_table(blk=0), "profiles.p.blk", "must be > 0"),
        (profile_table(power_nominal=50), "profiles.p.power_nominal", "must be >= power_idle"),
        (profile_table(power_idle=-1), "profiles.p.power_idle", "must be >= 0"),
    ],
)
def test_profile_validation(table, field, text):
    with pytest.raises(SpecError) as e:
        profile_from_dict("p", table)
    assert e.value.field == field
    assert field in str(e.value) and text in str(e.value)


def test_profile_defaults():
    p = profile_from_dict("p", profile_table(blk=None, name=None, source=None))
    assert (p.blk, p.name, p.source) == (16, "p", "")


def test_direct_construction_validates():
    h = catalog.get_gpu("h100-sxm")
    with pytest.raises(SpecError, match=r"gpus\.h100-sxm\.mem_bw: must be > 0"):
        dataclasses.replace(h, mem_bw=-1.0)
    with pytest.raises(SpecError, match=r"gpus\.h100-sxm\.tdp: must be a number"):
        GPU(**{**dataclasses.asdict(h), "tdp": "700"})
    assert dataclasses.replace(h, tdp=800).tdp == 800.0  # normalised to float
    m = catalog.get_model("mixtral-8x7b")
    with pytest.raises(SpecError, match=r"models\.mixtral-8x7b\.experts_per_token"):
        dataclasses.replace(m, experts_per_token=9)
    with pytest.raises(SpecError, match=r"models\.mixtral-8x7b\.n_layers: must be an integer"):
        Model(**{**dataclasses.asdict(m), "n_layers": 32.0})
    p = catalog.get_profile("h100")
    with pytest.raises(SpecError, match=r"profiles\.h100\.power_nominal"):
        dataclasses.replace(p, power_nominal=100.0)


# ---------------------------------------------------------------------------------- display


def test_describe_tables_show_units_and_sources():
    gpus = catalog.describe_gpus()
    assert "TB/s" in gpus and "GB" in gpus and "TF" in gpus and "W" in gpus
    for g in catalog.load_gpus().values():
        assert g.key in gpus and g.source in gpus
    assert "989.5" in gpus and "projected" in gpus and "measured" in gpus
    models = catalog.describe_models()
    for m in catalog.load_models().values():
        assert m.key in models and m.source in models
    assert "MLA" in models
    profiles = catalog.describe_profiles()
    for p in catalog.load_profiles().values():
        assert p.key in profiles and p.source in profiles


def test_flat_power_curves_are_allowed():
    """A flat curve (MODEL.md: the law is exactly -1 "with flat power") is a valid input."""
    flat = catalog.gpu_from_dict(
        "g", h100_table(power_idle=500, power_nominal=500, power_k=1, power_x0=4.2)
    )
    assert flat.power_idle == flat.power_nominal == 500
    still = catalog.gpu_from_dict(
        "g", h100_table(power_idle=300, power_nominal=600, power_k=0, power_x0=4.2)
    )
    assert still.power_k == 0

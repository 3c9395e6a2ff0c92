"""The GPU, model and calibrated-profile catalogs, and the Hugging Face config importer.

Data lives in ``sweep/data/{gpus,models,profiles}.toml``, one table per entry with a ``source``
for its figures. This module turns those tables (and users' ``[gpus.NAME]``, ``[models.NAME]``,
``[profiles.NAME]`` spec tables) into frozen dataclasses, validating at construction: an unknown
field, a missing required field, a wrong type or an out-of-range value raises
:class:`sweep.errors.SpecError` naming the dotted field (``gpus.h100-sxm.mem_bw``) and what is
allowed there.

Units are SI (MODEL.md section 2): bytes, bytes/s, dense tensor FLOP/s, W, s, USD/hour.
Conversions to TB/s, GB, TFLOP/s happen only in the ``describe_*`` display functions.

GPU power curve. ``P(n) = power_idle + (power_nominal - power_idle) / (1 + exp(-power_k *
(log2(max(n, 1)) - power_x0)))``. Where a GPU's table gives no measured curve (only the H100's
is measured), it is projected from the TDP with the H100's fractions (MODEL.md section 2):
``power_idle = 0.43 tdp``, ``power_nominal = 0.86 tdp``, ``power_k = 1.0``, ``power_x0 = 4.2``,
and ``power_source`` records ``"projected"`` (else ``"measured"``).

Model conventions (also at the top of ``models.toml``):

- dense: ``n_experts = experts_per_token = moe_intermediate = n_shared_experts = 0`` and
  ``n_dense_layers = n_layers``; an MoE model is ``n_dense_layers`` dense-FFN layers followed by
  MoE layers (every layout the importer accepts is of that form);
- MLA attention exactly when ``kv_lora_rank > 0``; non-MLA models have ``q_lora_rank =
  kv_lora_rank = qk_nope_head_dim = qk_rope_head_dim = v_head_dim = 0``; ``q_lora_rank = 0`` on an
  MLA model means full-rank queries;
- ``head_dim`` is the config's ``head_dim`` when given, else ``hidden / n_heads``; for MLA models
  it is ``qk_nope_head_dim + qk_rope_head_dim``, and MLA formulas use the MLA fields instead.

Parameter counts are not computed here (the kernels do that).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.errors import SpecError

__all__ = [
    "GPU",
    "Model",
    "Profile",
    "PROJECTED_IDLE_FRACTION",
    "PROJECTED_NOMINAL_FRACTION",
    "PROJECTED_K",
    "PROJECTED_X0",
    "load_gpus",
    "load_models",
    "load_profiles",
    "get_gpu",
    "get_model",
    "get_profile",
    "gpu_from_dict",
    "model_from_dict",
    "profile_from_dict",
    "model_from_spec_table",
    "model_from_hf_config",
    "import_model",
    "model_to_toml",
    "describe_gpus",
    "describe_models",
    "describe_profiles",
]

# Projected power curve (MODEL.md section 2): the H100's measured 300 W / 600 W of its 700 W TDP.
PROJECTED_IDLE_FRACTION = 0.43
PROJECTED_NOMINAL_FRACTION = 0.86
PROJECTED_K = 1.0
PROJECTED_X0 = 4.2

POWER_SOURCES = ("measured", "projected")


# --------------------------------------------------------------------------------------------
# Field reading: unknown / missing / wrong type, shared by the three kinds of entry.

_REQUIRED = object()  # no default: the field must be given
_DERIVED = object()  # default computed from other fields after reading


@dataclass(frozen=True)
class _Field:
    kind: str  # "int", "float", "bool", "str", "float?" (float or None)
    default: Any = _REQUIRED
    help: str = ""  # what is allowed, for messages


_KIND_TEXT = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "float?": "a number (or absent)",
}


def _coerce(value: Any, f: _Field, field: str) -> Any:
    """Check one value's type and normalise it (ints to float for SI quantities)."""
    want = _KIND_TEXT[f.kind]
    got = f"{type(value).__name__} {value!r}"
    if f.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(field, f"must be {want}, got {got}")
        return value
    if f.kind in ("float", "float?"):
        if value is None and f.kind == "float?":
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(field, f"must be {want}, got {got}")
        value = float(value)
        if not math.isfinite(value):
            raise SpecError(field, f"must be a finite number, got {value!r}")
        return value
    if f.kind == "bool":
        if not isinstance(value, bool):
            raise SpecError(field, f"must be {want}, got {got}")
        return value
    if f.kind == "str":
        if not isinstance(value, str):
            raise SpecError(field, f"must be {want}, got {got}")
        return value
    raise AssertionError(f.kind)  # pragma: no cover


def _read_fields(d: Any, spec: Mapping[str, _Field], prefix: str) -> dict[str, Any]:
    if not isinstance(d, Mapping):
        raise SpecError(prefix, f"must be a table of fields, got {type(d).__name__}")
    for name in d:
        if name not in spec:
            allowed = ", ".join(spec)
            raise SpecError(f"{prefix}.{name}", f"unknown field; allowed fields: {allowed}")
    out: dict[str, Any] = {}
    for name, f in spec.items():
        field = f"{prefix}.{name}"
        if name in d:
            out[name] = _coerce(d[name], f, field)
        elif f.default is _REQUIRED:
            detail = f"; {f.help}" if f.help else ""
            raise SpecError(field, f"missing required field ({_KIND_TEXT[f.kind]}{detail})")
        else:
            out[name] = f.default
    return out


def _check_types(obj: Any, spec: Mapping[str, _Field], prefix: str) -> None:
    """Type-check (and normalise, on a frozen dataclass) every field of a constructed entry."""
    for name, f in spec.items():
        value = getattr(obj, name)
        if value is _DERIVED or value is _REQUIRED:
            raise SpecError(f"{prefix}.{name}", f"must be given ({_KIND_TEXT[f.kind]})")
        object.__setattr__(obj, name, _coerce(value, f, f"{prefix}.{name}"))


def _positive(v: dict, names: tuple[str, ...], prefix: str) -> None:
    for n in names:
        if not v[n] > 0:
            raise SpecError(f"{prefix}.{n}", f"must be > 0, got {v[n]!r}")


def _non_negative(v: dict, names: tuple[str, ...], prefix: str) -> None:
    for n in names:
        if not v[n] >= 0:
            raise SpecError(f"{prefix}.{n}", f"must be >= 0, got {v[n]!r}")


def _check_power_curve(v: dict, prefix: str) -> None:
    # A flat curve (power_nominal == power_idle, or power_k == 0) is allowed: it is the case in
    # which MODEL.md's law is exactly -1, and what-if studies need it.
    _non_negative(v, ("power_idle", "power_k"), prefix)
    if not v["power_nominal"] >= v["power_idle"]:
        raise SpecError(
            f"{prefix}.power_nominal",
            f"must be >= power_idle ({v['power_idle']!r} W), got {v['power_nominal']!r}",
        )


def _values(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


# --------------------------------------------------------------------------------------------
# GPU

_GPU_FIELDS: dict[str, _Field] = {
    "name": _Field("str", _DERIVED, "a human-readable name; defaults to the key"),
    "mem_bw": _Field("float", help="peak memory bandwidth in bytes/s, > 0"),
    "mem_capacity": _Field("float", help="memory in bytes, > 0"),
    "flops_bf16": _Field("float", help="dense BF16 tensor FLOP/s, >= 0 (0 = unsupported)"),
    "flops_fp8": _Field("float", help="dense FP8 tensor FLOP/s, >= 0 (0 = unsupported)"),
    "flops_fp4": _Field("float", help="dense FP4 tensor FLOP/s, >= 0 (0 = unsupported)"),
    "tdp": _Field("float", help="power limit in W, > 0"),
    "power_idle": _Field("float", _DERIVED),
    "power_nominal": _Field("float", _DERIVED),
    "power_k": _Field("float", _DERIVED),
    "power_x0": _Field("float", _DERIVED),
    "power_source": _Field("str", _DERIVED),
    "price_per_hour": _Field("float?", None),
    "source": _Field("str", ""),
    "notes": _Field("str", ""),
}
_POWER_CURVE = ("power_idle", "power_nominal", "power_k", "power_x0")


def _check_gpu(v: dict, prefix: str) -> None:
    _positive(v, ("mem_bw", "mem_capacity", "tdp"), prefix)
    _non_negative(v, ("flops_bf16", "flops_fp8", "flops_fp4"), prefix)
    if not (v["flops_bf16"] > 0 or v["flops_fp8"] > 0 or v["flops_fp4"] > 0):
        raise SpecError(
            f"{prefix}.flops_bf16", "at least one of flops_bf16, flops_fp8, flops_fp4 must be > 0"
        )
    _check_power_curve(v, prefix)
    if v["power_source"] not in POWER_SOURCES:
        raise SpecError(
            f"{prefix}.power_source",
            f"must be one of {', '.join(POWER_SOURCES)}, got {v['power_source']!r}",
        )
    if v["price_per_hour"] is not None and not v["price_per_hour"] >= 0:
        raise SpecError(
            f"{prefix}.price_per_hour", f"must be >= 0 USD/hour, got {v['price_per_hour']!r}"
        )


@dataclass(frozen=True, kw_only=True)
class GPU:
    """One accelerator, SI units. ``flops_*`` are dense tensor FLOP/s (0 = dtype unsupported).

    The power curve (W, per GPU) is ``power_idle + (power_nominal - power_idle) /
    (1 + exp(-power_k * (log2(max(n, 1)) - power_x0)))``; ``power_source`` is ``"measured"`` or
    ``"projected"`` (from ``tdp``; see the module docstring).
    """

    key: str
    name: str
    mem_bw: float  # bytes/s
    mem_capacity: float  # bytes
    flops_bf16: float  # FLOP/s, dense
    flops_fp8: float  # FLOP/s, dense
    flops_fp4: float  # FLOP/s, dense
    tdp: float  # W
    power_idle: float  # W
    power_nominal: float  # W
    power_k: float  # 1 / log2(sequences)
    power_x0: float  # log2(sequences)
    power_source: str  # "measured" | "projected"
    price_per_hour: float | None = None  # USD/hour
    source: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        prefix = f"gpus.{self.key}"
        _check_types(self, _GPU_FIELDS, prefix)
        _check_gpu(_values(self), prefix)

    def flops(self, dtype: str) -> float:
        """Dense tensor FLOP/s for ``dtype`` in {"bf16", "fp8", "fp4"} (0.0 = unsupported)."""
        if dtype not in ("bf16", "fp8", "fp4"):
            raise SpecError("dtype", f"must be one of bf16, fp8, fp4, got {dtype!r}")
        return getattr(self, f"flops_{dtype}")


def gpu_from_dict(key: str, d: Mapping[str, Any], where: str = "gpus") -> GPU:
    """Build a :class:`GPU` from a TOML table; errors name ``f"{where}.{key}.FIELD"``.

    The four power-curve fields are given together (a measured curve) or not at all (projected
    from ``tdp``). ``power_source`` may be given to label a given curve; it defaults to
    ``"measured"`` when the curve is given and ``"projected"`` when it is not.
    """
    prefix = f"{where}.{key}"
    v = _read_fields(d, _GPU_FIELDS, prefix)
    if v["name"] is _DERIVED:
        v["name"] = key
    given = [n for n in _POWER_CURVE if v[n] is not _DERIVED]
    if given and len(given) != len(_POWER_CURVE):
        missing = [n for n in _POWER_CURVE if v[n] is _DERIVED]
        raise SpecError(
            f"{prefix}.{missing[0]}",
            "the power curve needs all of power_idle, power_nominal, power_k, power_x0 "
            "(a measured curve) or none of them (projected from tdp)",
        )
    if v["power_source"] is not _DERIVED and v["power_source"] not in POWER_SOURCES:
        raise SpecError(
            f"{prefix}.power_source",
            f"must be one of {', '.join(POWER_SOURCES)}, got {v['power_source']!r}",
        )
    if not given:
        if v["power_source"] == "measured":
            raise SpecError(
                f"{prefix}.power_source",
                "'measured' needs power_idle, power_nominal, power_k and power_x0",
            )
        _positive(v, ("tdp",), prefix)
        v["power_idle"] = PROJECTED_IDLE_FRACTION * v["tdp"]
        v["power_nominal"] = PROJECTED_NOMINAL_FRACTION * v["tdp"]
        v["power_k"] = PROJECTED_K
        v["power_x0"] = PROJECTED_X0
        v["power_source"] = "projected"
    elif v["power_source"] is _DERIVED:
        v["power_source"] = "measured"
    _check_gpu(v, prefix)
    return GPU(key=key, **v)


# --------------------------------------------------------------------------------------------
# Model

_MLA_FIELDS = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
_MOE_FIELDS = ("n_experts", "experts_per_token", "moe_intermediate", "n_shared_experts")

_MODEL_FIELDS: dict[str, _Field] = {
    "name": _Field("str", _DERIVED, "a human-readable name; defaults to the key"),
    "n_layers": _Field("int", help="transformer layers, > 0"),
    "hidden": _Field("int", help="hidden size, > 0"),
    "n_heads": _Field("int", help="attention heads, > 0"),
    "n_kv_heads": _Field("int", _DERIVED, "KV heads dividing n_heads; defaults to n_heads"),
    "head_dim": _Field("int", _DERIVED, "defaults to hidden / n_heads"),
    "intermediate": _Field("int", help="dense FFN width, >= 0 (> 0 when a layer is dense)"),
    "vocab": _Field("int", help="vocabulary size, > 0"),
    "tied_embeddings": _Field("bool", False),
    "n_experts": _Field("int", 0),
    "experts_per_token": _Field("int", 0),
    "moe_intermediate": _Field("int", 0),
    "n_shared_experts": _Field("int", 0),
    "n_dense_layers": _Field("int", _DERIVED),
    "q_lora_rank": _Field("int", 0),
    "kv_lora_rank": _Field("int", 0),
    "qk_nope_head_dim": _Field("int", 0),
    "qk_rope_head_dim": _Field("int", 0),
    "v_head_dim": _Field("int", 0),
    "max_position": _Field("int", help="longest supported context in tokens, > 0"),
    "source": _Field("str", ""),
}


def _check_model(v: dict, prefix: str) -> None:
    _positive(v, ("n_layers", "hidden", "n_heads", "n_kv_heads", "head_dim", "vocab"), prefix)
    _positive(v, ("max_position",), prefix)
    _non_negative(v, ("intermediate", "n_dense_layers", *_MOE_FIELDS, *_MLA_FIELDS), prefix)
    if v["n_kv_heads"] > v["n_heads"] or v["n_heads"] % v["n_kv_heads"]:
        raise SpecError(
            f"{prefix}.n_kv_heads",
            f"must divide n_heads ({v['n_heads']}), got {v['n_kv_heads']}",
        )
    if v["n_dense_layers"] > v["n_layers"]:
        raise SpecError(
            f"{prefix}.n_dense_layers",
            f"must be <= n_layers ({v['n_layers']}), got {v['n_dense_layers']}",
        )
    if v["n_dense_layers"] > 0 and v["intermediate"] == 0:
        raise SpecError(f"{prefix}.intermediate", "must be > 0: the model has dense-FFN layers")
    if v["n_experts"] == 0:
        for n in ("experts_per_token", "moe_intermediate", "n_shared_experts"):
            if v[n] != 0:
                raise SpecError(
                    f"{prefix}.{n}", f"must be 0 for a dense model (n_experts = 0), got {v[n]}"
                )
        if v["n_dense_layers"] != v["n_layers"]:
            raise SpecError(
                f"{prefix}.n_dense_layers",
                f"must equal n_layers ({v['n_layers']}) for a dense model (n_experts = 0), "
                f"got {v['n_dense_layers']}",
            )
    else:
        if not 1 <= v["experts_per_token"] <= v["n_experts"]:
            raise SpecError(
                f"{prefix}.experts_per_token",
                f"must be between 1 and n_experts ({v['n_experts']}), got {v['experts_per_token']}",
            )
        _positive(v, ("moe_intermediate",), prefix)
        if v["n_dense_layers"] >= v["n_layers"]:
            raise SpecError(
                f"{prefix}.n_dense_layers",
                f"must be < n_layers ({v['n_layers']}) for an MoE model (at least one MoE "
                f"layer), got {v['n_dense_layers']}",
            )
    if v["kv_lora_rank"] > 0:
        _positive(v, ("v_head_dim",), prefix)
        if v["qk_nope_head_dim"] + v["qk_rope_head_dim"] == 0:
            raise SpecError(
                f"{prefix}.qk_nope_head_dim",
                "qk_nope_head_dim + qk_rope_head_dim must be > 0 for MLA (kv_lora_rank > 0)",
            )
    else:
        for n in _MLA_FIELDS:
            if v[n] != 0:
                raise SpecError(
                    f"{prefix}.{n}",
                    f"must be 0 without MLA (kv_lora_rank = 0), got {v[n]}; "
                    "MLA attention is kv_lora_rank > 0",
                )


@dataclass(frozen=True, kw_only=True)
class Model:
    """A transformer's shape, the fields of a Hugging Face config.json under catalog names.

    Conventions are in the module docstring (dense: no experts and ``n_dense_layers =
    n_layers``; MLA exactly when ``kv_lora_rank > 0``).
    """

    key: str
    name: str
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int  # dense FFN width (SwiGLU: gate, up, down)
    vocab: int
    tied_embeddings: bool
    n_experts: int  # routed experts per MoE layer
    experts_per_token: int
    moe_intermediate: int  # width of each routed and shared expert
    n_shared_experts: int
    n_dense_layers: int  # leading layers with a dense FFN
    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    max_position: int  # tokens
    source: str = ""

    def __post_init__(self) -> None:
        prefix = f"models.{self.key}"
        _check_types(self, _MODEL_FIELDS, prefix)
        _check_model(_values(self), prefix)

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0


def _fill_model_defaults(key: str, v: dict, prefix: str) -> None:
    if v["name"] is _DERIVED:
        v["name"] = key
    if v["n_kv_heads"] is _DERIVED:
        v["n_kv_heads"] = v["n_heads"]
    if v["head_dim"] is _DERIVED:
        _positive(v, ("hidden", "n_heads"), prefix)
        if v["kv_lora_rank"] > 0:
            v["head_dim"] = v["qk_nope_head_dim"] + v["qk_rope_head_dim"]
        elif v["hidden"] % v["n_heads"] == 0:
            v["head_dim"] = v["hidden"] // v["n_heads"]
        else:
            raise SpecError(
                f"{prefix}.head_dim",
                f"missing, and hidden ({v['hidden']}) is not a multiple of n_heads "
                f"({v['n_heads']}): give head_dim (an integer > 0)",
            )
    if v["n_dense_layers"] is _DERIVED:
        v["n_dense_layers"] = v["n_layers"] if v["n_experts"] == 0 else 0


def model_from_dict(key: str, d: Mapping[str, Any], where: str = "models") -> Model:
    """Build a :class:`Model` from a TOML table of catalog fields.

    Required: ``n_layers``, ``hidden``, ``n_heads``, ``intermediate``, ``vocab``,
    ``max_position``. Defaults: ``name`` = key, ``n_kv_heads`` = ``n_heads``, ``head_dim`` =
    ``hidden / n_heads`` (``qk_nope_head_dim + qk_rope_head_dim`` for MLA), MoE and MLA fields 0,
    ``n_dense_layers`` = ``n_layers`` for a dense model and 0 for an MoE one,
    ``tied_embeddings`` false.
    """
    prefix = f"{where}.{key}"
    v = _read_fields(d, _MODEL_FIELDS, prefix)
    _fill_model_defaults(key, v, prefix)
    _check_model(v, prefix)
    return Model(key=key, **v)


def model_from_spec_table(
    key: str, table: Mapping[str, Any], base_dir: str | Path, where: str = "models"
) -> Model:
    """A spec's ``[models.KEY]`` table: catalog fields, or ``{ config = "path/config.json" }``.

    With ``config`` the file (relative to ``base_dir`` unless absolute; a folder means its
    ``config.json``) is read as a Hugging Face config; only ``name`` and ``source`` may be given
    beside it.
    """
    prefix = f"{where}.{key}"
    if not isinstance(table, Mapping):
        raise SpecError(prefix, f"must be a table of fields, got {type(table).__name__}")
    if "config" not in table:
        return model_from_dict(key, table, where)
    allowed = ("config", "name", "source")
    for k in table:
        if k not in allowed:
            raise SpecError(
                f"{prefix}.{k}",
                "not allowed beside config; a table with config may also give name and source "
                "(to change other fields, write the whole table: see `sweep import-model`)",
            )
    cfg = table["config"]
    if not isinstance(cfg, str) or not cfg:
        raise SpecError(f"{prefix}.config", f"must be a path to a config.json, got {cfg!r}")
    for k in ("name", "source"):
        if k in table and not isinstance(table[k], str):
            raise SpecError(f"{prefix}.{k}", f"must be a string, got {table[k]!r}")
    path = Path(cfg)
    if not path.is_absolute():
        path = Path(base_dir) / path
    config, path = _read_config_json(path, f"{prefix}.config")
    return model_from_hf_config(
        config,
        key,
        source=table.get("source", str(path)),
        name=table.get("name"),
        where=f"{prefix}.config",
        origin=str(path),
    )


# --------------------------------------------------------------------------------------------
# Hugging Face config.json

_HF_MODEL_TYPES = {
    "llama": "dense",
    "mistral": "dense",
    "qwen2": "dense",
    "qwen3": "dense",
    "mixtral": "mixtral",
    "qwen2_moe": "qwen_moe",
    "qwen3_moe": "qwen_moe",
    "deepseek_v2": "deepseek",
    "deepseek_v3": "deepseek",
}
_HF_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "MixtralForCausalLM": "mixtral",
    "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "DeepseekV2ForCausalLM": "deepseek_v2",
    "DeepseekV3ForCausalLM": "deepseek_v3",
}

# catalog field -> the config.json field it came from, to name the right field in errors
_HF_NAMES_COMMON = {
    "n_layers": "num_hidden_layers",
    "hidden": "hidden_size",
    "n_heads": "num_attention_heads",
    "n_kv_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "intermediate": "intermediate_size",
    "vocab": "vocab_size",
    "tied_embeddings": "tie_word_embeddings",
    "experts_per_token": "num_experts_per_tok",
    "moe_intermediate": "moe_intermediate_size",
    "q_lora_rank": "q_lora_rank",
    "kv_lora_rank": "kv_lora_rank",
    "qk_nope_head_dim": "qk_nope_head_dim",
    "qk_rope_head_dim": "qk_rope_head_dim",
    "v_head_dim": "v_head_dim",
    "max_position": "max_position_embeddings",
}
_HF_NAMES_FAMILY = {
    "mixtral": {"n_experts": "num_local_experts", "moe_intermediate": "intermediate_size"},
    "qwen_moe": {"n_experts": "num_experts", "n_dense_layers": "mlp_only_layers"},
    "deepseek": {
        "n_experts": "n_routed_experts",
        "n_shared_experts": "n_shared_experts",
        "n_dense_layers": "first_k_dense_replace",
        "head_dim": "qk_nope_head_dim",
    },
    "dense": {},
}


class _HFReader:
    """Typed access to config.json fields; errors name ``f"{where}.{field}"``."""

    def __init__(self, config: Mapping[str, Any], where: str, origin: str):
        self.config = config
        self.where = where
        self.suffix = f" (in {origin})" if origin else ""

    def error(self, field: str, message: str) -> SpecError:
        return SpecError(f"{self.where}.{field}", message + self.suffix)

    def integer(self, field: str, default: Any = _REQUIRED) -> Any:
        """An integer field; absent or null gives ``default`` (an error when required)."""
        value = self.config.get(field)
        if value is None:
            if default is _REQUIRED:
                raise self.error(field, "missing required config.json field (an integer)")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(field, f"must be an integer, got {type(value).__name__} {value!r}")
        return value

    def boolean(self, field: str, default: bool) -> bool:
        value = self.config.get(field)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(field, f"must be true or false, got {value!r}")
        return value

    def int_list(self, field: str) -> list[int]:
        value = self.config.get(field)
        if value is None:
            return []
        if not isinstance(value, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in value
        ):
            raise self.error(field, f"must be a list of layer indices, got {value!r}")
        return value


def _hf_family(config: Mapping[str, Any], where: str, suffix: str) -> tuple[str, str]:
    model_type = config.get("model_type")
    if model_type is None:
        archs = config.get("architectures") or []
        if isinstance(archs, list) and archs and archs[0] in _HF_ARCHITECTURES:
            model_type = _HF_ARCHITECTURES[archs[0]]
        else:
            raise SpecError(
                f"{where}.model_type",
                "missing (and architectures names no supported class); supported model_type: "
                + ", ".join(_HF_MODEL_TYPES)
                + suffix,
            )
    if model_type not in _HF_MODEL_TYPES:
        raise SpecError(
            f"{where}.model_type",
            f"unsupported model_type {model_type!r}; supported: {', '.join(_HF_MODEL_TYPES)} "
            "(for another architecture write the [models.NAME] table by hand)" + suffix,
        )
    return model_type, _HF_MODEL_TYPES[model_type]


def _leading_dense(is_moe: list[bool], g: _HFReader, field: str, rule: str) -> int | None:
    """Number of leading dense layers, None when no layer is MoE; an error for other layouts."""
    first = next((i for i, m in enumerate(is_moe) if m), None)
    if first is None:
        return None
    dense_after = [i for i in range(first, len(is_moe)) if not is_moe[i]]
    if dense_after:
        raise g.error(
            field,
            f"the layer layout ({rule}) puts dense-FFN layers {dense_after[:8]}"
            f"{'...' if len(dense_after) > 8 else ''} after MoE layer {first}; the catalog "
            "describes MoE models as leading dense layers followed by MoE layers only "
            "(n_dense_layers), so this model cannot be represented",
        )
    return first


def model_from_hf_config(
    config: Mapping[str, Any],
    key: str,
    source: str = "",
    *,
    name: str | None = None,
    where: str = "config",
    origin: str = "",
) -> Model:
    """Map a Hugging Face config.json (already parsed) to a :class:`Model`.

    Supported ``model_type``: llama, mistral, qwen2, qwen3 (dense); mixtral
    (``num_local_experts``, ``num_experts_per_tok``; its experts use ``intermediate_size``);
    qwen2_moe, qwen3_moe (``num_experts``, ``num_experts_per_tok``, ``moe_intermediate_size``,
    ``decoder_sparse_step``, ``mlp_only_layers``; qwen2_moe's ``shared_expert_intermediate_size``
    becomes that many experts' worth of ``moe_intermediate``); deepseek_v2, deepseek_v3
    (``n_routed_experts``, ``n_shared_experts``, ``first_k_dense_replace``, ``moe_layer_freq``,
    ``moe_intermediate_size`` and the MLA fields; ``q_lora_rank`` may be null).

    ``num_key_value_heads`` defaults to ``num_attention_heads``, ``tie_word_embeddings`` to
    false, ``head_dim`` to ``hidden_size / num_attention_heads``. Sliding-window attention is
    rejected (the KV model assumes full attention), as are MoE layouts other than "leading dense
    layers, then MoE" and models whose layers are all dense-FFN despite an expert count (those
    are mapped as dense). DeepSeek's multi-token-prediction layers are not counted.

    Errors are :class:`SpecError` naming ``f"{where}.CONFIG_FIELD"``; ``origin`` (a file path)
    is added to their messages.
    """
    suffix = f" (in {origin})" if origin else ""
    if not isinstance(config, Mapping):
        raise SpecError(where, f"must be a JSON object, got {type(config).__name__}{suffix}")
    _, family = _hf_family(config, where, suffix)
    g = _HFReader(config, where, origin)

    n_layers = g.integer("num_hidden_layers")
    hidden = g.integer("hidden_size")
    n_heads = g.integer("num_attention_heads")
    max_position = g.integer("max_position_embeddings")
    v: dict[str, Any] = {
        "name": name if name is not None else key,
        "n_layers": n_layers,
        "hidden": hidden,
        "n_heads": n_heads,
        "n_kv_heads": g.integer("num_key_value_heads", n_heads),
        "head_dim": _DERIVED,
        "intermediate": g.integer("intermediate_size"),
        "vocab": g.integer("vocab_size"),
        "tied_embeddings": g.boolean("tie_word_embeddings", False),
        "n_experts": 0,
        "experts_per_token": 0,
        "moe_intermediate": 0,
        "n_shared_experts": 0,
        "n_dense_layers": _DERIVED,
        "q_lora_rank": 0,
        "kv_lora_rank": 0,
        "qk_nope_head_dim": 0,
        "qk_rope_head_dim": 0,
        "v_head_dim": 0,
        "max_position": max_position,
        "source": source,
    }

    window = config.get("sliding_window")
    if window is not None and config.get("use_sliding_window", True) is not False:
        if not isinstance(window, int) or isinstance(window, bool) or window < max_position:
            raise g.error(
                "sliding_window",
                f"sliding-window attention ({window!r} tokens) is not modelled: the KV-cache "
                "formulas assume every layer attends to the whole context",
            )
    layer_types = config.get("layer_types")
    if isinstance(layer_types, list) and any(t != "full_attention" for t in layer_types):
        raise g.error(
            "layer_types",
            f"only full_attention layers are modelled, got {sorted(set(layer_types))}",
        )

    if family in ("dense", "mixtral", "qwen_moe"):
        v["head_dim"] = g.integer("head_dim", _DERIVED)

    if family == "mixtral":
        v["n_experts"] = g.integer("num_local_experts")
        v["experts_per_token"] = g.integer("num_experts_per_tok")
        v["moe_intermediate"] = v["intermediate"]
        v["n_dense_layers"] = 0

    elif family == "qwen_moe":
        n_experts = g.integer("num_experts", 0)
        step = g.integer("decoder_sparse_step", 1)
        if step < 1:
            raise g.error("decoder_sparse_step", f"must be >= 1, got {step}")
        mlp_only = g.int_list("mlp_only_layers")
        bad = [i for i in mlp_only if not 0 <= i < n_layers]
        if bad:
            raise g.error("mlp_only_layers", f"layer indices must be in [0, {n_layers}), got {bad}")
        is_moe = [
            n_experts > 0 and i not in mlp_only and (i + 1) % step == 0 for i in range(n_layers)
        ]
        rule = "layer i is MoE unless in mlp_only_layers, and only when (i + 1) % "
        rule += f"decoder_sparse_step == 0, decoder_sparse_step = {step}"
        n_dense = _leading_dense(
            is_moe, g, "mlp_only_layers" if mlp_only else "decoder_sparse_step", rule
        )
        if n_dense is not None:
            moe_intermediate = g.integer("moe_intermediate_size")
            v["n_experts"] = n_experts
            v["experts_per_token"] = g.integer("num_experts_per_tok")
            v["moe_intermediate"] = moe_intermediate
            v["n_dense_layers"] = n_dense
            shared = g.integer("shared_expert_intermediate_size", 0)
            if shared:
                if moe_intermediate <= 0 or shared % moe_intermediate:
                    raise g.error(
                        "shared_expert_intermediate_size",
                        f"must be a multiple of moe_intermediate_size ({moe_intermediate}) to "
                        f"be represented as n_shared_experts experts, got {shared}",
                    )
                v["n_shared_experts"] = shared // moe_intermediate

    elif family == "deepseek":
        kv_lora_rank = g.integer("kv_lora_rank")
        nope = g.integer("qk_nope_head_dim")
        rope = g.integer("qk_rope_head_dim")
        v.update(
            q_lora_rank=g.integer("q_lora_rank", 0),
            kv_lora_rank=kv_lora_rank,
            qk_nope_head_dim=nope,
            qk_rope_head_dim=rope,
            v_head_dim=g.integer("v_head_dim"),
            head_dim=nope + rope,
        )
        n_routed = g.integer("n_routed_experts", 0)
        first_k = g.integer("first_k_dense_replace", 0)
        freq = g.integer("moe_layer_freq", 1)
        if freq < 1:
            raise g.error("moe_layer_freq", f"must be >= 1, got {freq}")
        is_moe = [n_routed > 0 and i >= first_k and i % freq == 0 for i in range(n_layers)]
        rule = f"layer i is MoE when i >= first_k_dense_replace ({first_k}) and "
        rule += f"i % moe_layer_freq ({freq}) == 0"
        n_dense = _leading_dense(is_moe, g, "moe_layer_freq", rule)
        if n_dense is not None:
            v["n_experts"] = n_routed
            v["experts_per_token"] = g.integer("num_experts_per_tok")
            v["moe_intermediate"] = g.integer("moe_intermediate_size")
            v["n_shared_experts"] = g.integer("n_shared_experts", 0)
            v["n_dense_layers"] = n_dense

    names = {**_HF_NAMES_COMMON, **_HF_NAMES_FAMILY[family]}
    try:
        _fill_model_defaults(key, v, where)
        _check_model(v, where)
    except SpecError as e:
        field = e.field.removeprefix(f"{where}.")
        message = str(e).removeprefix(f"{e.field}: ")
        hf = names.get(field, field)
        raise g.error(hf, f"{message} (catalog field {field})") from None
    return Model(key=key, **v)


def _read_config_json(path: Path, field: str) -> tuple[dict[str, Any], Path]:
    try:
        if path.is_dir():
            path = path / "config.json"
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        reason = getattr(e, "strerror", None) or e
        raise SpecError(field, f"cannot read {str(path)[:200]!r}: {reason}") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(field, f"{path} is not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(config, dict):
        raise SpecError(field, f"{path} must hold a JSON object")
    return config, path


def _default_key(path: Path, config: Mapping[str, Any]) -> tuple[str, str]:
    """(key, name) for an imported config: ``_name_or_path``'s basename, else the folder name.

    A Hugging Face cache snapshot (``models--ORG--NAME/snapshots/HASH/config.json``) yields NAME.
    """
    name_or_path = config.get("_name_or_path")
    if isinstance(name_or_path, str) and name_or_path.strip("/ "):
        name = name_or_path.rstrip("/").split("/")[-1]
    else:
        folder = path.resolve().parent
        name = folder.name
        if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
            name = folder.parent.parent.name.split("--")[-1]
    return name.lower(), name


def import_model(path: str | Path, key: str | None = None) -> Model:
    """Read a local Hugging Face config.json (never the network) into a :class:`Model`.

    ``path`` is the file or its folder. ``key`` defaults to the config's ``_name_or_path``
    basename, else the folder name (a Hugging Face cache snapshot folder gives its repo name),
    lowercased.
    """
    config, p = _read_config_json(Path(path), "config")
    derived_key, name = _default_key(p, config)
    if key is None:
        if not derived_key:
            raise SpecError("key", f"cannot derive a model key from {p}; give one")
        key = derived_key
    return model_from_hf_config(config, key, source=str(p), name=name or key, origin=str(p))


# --------------------------------------------------------------------------------------------
# Profile

_PROFILE_FIELDS: dict[str, _Field] = {
    "name": _Field("str", _DERIVED, "a human-readable name; defaults to the key"),
    "model": _Field("str", ""),
    "tp": _Field("int", help="GPUs per replica, >= 1"),
    "w_s": _Field("float", help="base iteration time in s, > 0"),
    "h_s": _Field("float", help="per-sequence time at calib_ctx in s, > 0"),
    "calib_ctx": _Field("int", help="calibration context in tokens, > 0"),
    "max_slots": _Field("int", help="concurrency limit at calib_ctx, > 0"),
    "kv_blocks": _Field("int", help="KV-cache blocks, > 0"),
    "blk": _Field("int", 16),
    "power_idle": _Field("float", help="W, >= 0"),
    "power_nominal": _Field("float", help="W, >= power_idle"),
    "power_k": _Field("float", help=">= 0 (0 = flat)"),
    "power_x0": _Field("float", help="log2(sequences in flight) at the curve's midpoint"),
    "source": _Field("str", ""),
}


def _check_profile(v: dict, prefix: str) -> None:
    _positive(v, ("tp", "w_s", "h_s", "calib_ctx", "max_slots", "kv_blocks", "blk"), prefix)
    _check_power_curve(v, prefix)


@dataclass(frozen=True, kw_only=True)
class Profile:
    """A calibrated (GPU, model, tp) deployment (MODEL.md section 1), SI units."""

    key: str
    name: str
    model: str
    tp: int
    w_s: float  # s
    h_s: float  # s
    calib_ctx: int  # tokens
    max_slots: int
    kv_blocks: int
    blk: int  # tokens
    power_idle: float  # W
    power_nominal: float  # W
    power_k: float
    power_x0: float
    source: str = ""

    def __post_init__(self) -> None:
        prefix = f"profiles.{self.key}"
        _check_types(self, _PROFILE_FIELDS, prefix)
        _check_profile(_values(self), prefix)


def profile_from_dict(key: str, d: Mapping[str, Any], where: str = "profiles") -> Profile:
    """Build a :class:`Profile` from a TOML table; ``name`` defaults to the key, ``blk`` to 16."""
    prefix = f"{where}.{key}"
    v = _read_fields(d, _PROFILE_FIELDS, prefix)
    if v["name"] is _DERIVED:
        v["name"] = key
    _check_profile(v, prefix)
    return Profile(key=key, **v)


# --------------------------------------------------------------------------------------------
# Packaged catalogs


def _read_data(filename: str) -> dict[str, Any]:
    text = (importlib.resources.files("sweep") / "data" / filename).read_text(encoding="utf-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # a packaging bug, but say where
        raise SpecError(f"sweep/data/{filename}", f"invalid TOML: {e}") from None


def _load(filename: str, where: str, build: Callable[[str, Any, str], Any]) -> dict[str, Any]:
    out = {}
    for key, table in _read_data(filename).items():
        entry = build(key, table, where)
        if not entry.source.strip():
            raise SpecError(f"{where}.{key}.source", "catalog entries must cite a source")
        out[key] = entry
    return out


@functools.cache
def _gpus() -> dict[str, GPU]:
    return _load("gpus.toml", "gpus", gpu_from_dict)


@functools.cache
def _models() -> dict[str, Model]:
    return _load("models.toml", "models", model_from_dict)


@functools.cache
def _profiles() -> dict[str, Profile]:
    return _load("profiles.toml", "profiles", profile_from_dict)


def load_gpus() -> dict[str, GPU]:
    """The packaged GPU catalog, key -> :class:`GPU` (a fresh dict each call)."""
    return dict(_gpus())


def load_models() -> dict[str, Model]:
    """The packaged model catalog, key -> :class:`Model` (a fresh dict each call)."""
    return dict(_models())


def load_profiles() -> dict[str, Profile]:
    """The packaged calibrated profiles, key -> :class:`Profile` (a fresh dict each call)."""
    return dict(_profiles())


def _get(kind: str, catalog: Mapping[str, Any], key: str, field: str) -> Any:
    # Exact keys only: no fuzzy or family matching (a peer tool silently mapped a10g to L40S).
    if key not in catalog:
        raise SpecError(field, f"unknown {kind} {key!r}; known: {', '.join(sorted(catalog))}")
    return catalog[key]


def get_gpu(key: str, field: str = "gpu") -> GPU:
    """The catalog GPU ``key``; a SpecError on ``field`` listing the known keys otherwise."""
    return _get("GPU", _gpus(), key, field)


def get_model(key: str, field: str = "model") -> Model:
    """The catalog model ``key``; a SpecError on ``field`` listing the known keys otherwise."""
    return _get("model", _models(), key, field)


def get_profile(key: str, field: str = "profile") -> Profile:
    """The catalog profile ``key``; a SpecError on ``field`` listing the known keys otherwise."""
    return _get("profile", _profiles(), key, field)


# --------------------------------------------------------------------------------------------
# Output: TOML for import-model, human tables for `sweep catalog`

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)  # a TOML basic string


def model_to_toml(model: Model) -> str:
    """A ``[models.KEY]`` table for a spec; parsing it with :func:`model_from_dict` round-trips."""
    lines = [f"[models.{_toml_key(model.key)}]"]
    for f in dataclasses.fields(model):
        if f.name == "key":
            continue
        lines.append(f"{f.name} = {_toml_value(getattr(model, f.name))}")
    return "\n".join(lines) + "\n"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def _num(x: float) -> str:
    return "-" if x == 0 else f"{x:,.5g}"


def describe_gpus() -> str:
    """The GPU catalog as a table (TB/s, GB, dense TFLOP/s, W) with each entry's source."""
    gpus = _gpus()
    header = ["gpu", "mem TB/s", "mem GB", "bf16 TF", "fp8 TF", "fp4 TF", "TDP W",
              "P_idle W", "P_nom W", "k", "x0", "curve"]  # fmt: skip
    rows = [
        [
            g.key,
            f"{g.mem_bw / 1e12:.3g}",
            f"{g.mem_capacity / 1e9:.0f}",
            _num(g.flops_bf16 / 1e12),
            _num(g.flops_fp8 / 1e12),
            _num(g.flops_fp4 / 1e12),
            f"{g.tdp:.0f}",
            f"{g.power_idle:.0f}",
            f"{g.power_nominal:.0f}",
            f"{g.power_k:g}",
            f"{g.power_x0:g}",
            g.power_source,
        ]
        for g in gpus.values()
    ]
    notes = [
        "Dense tensor FLOP/s ('-' = dtype unsupported); 1 TB = 1e12 bytes, 1 GB = 1e9 bytes.",
        "Projected curves: P_idle = 0.43 TDP, P_nom = 0.86 TDP, k = 1.0, x0 = 4.2 (MODEL.md).",
        "",
        "Sources:",
    ]
    for g in gpus.values():
        notes.append(f"  {g.key} ({g.name}): {g.source}")
        if g.notes:
            notes.append(f"    note: {g.notes}")
    return _table(header, rows) + "\n\n" + "\n".join(notes) + "\n"


def describe_models() -> str:
    """The model catalog as a table with each entry's source (no parameter counts)."""
    models = _models()
    header = ["model", "layers", "hidden", "heads", "kv", "head_dim", "ffn", "vocab", "tied",
              "experts", "top-k", "moe ffn", "shared", "dense", "attention", "max ctx"]  # fmt: skip
    rows = []
    for m in models.values():
        if m.is_mla:
            attn = f"MLA kv{m.kv_lora_rank}/q{m.q_lora_rank or '-'}"
        else:
            attn = "MHA" if m.n_kv_heads == m.n_heads else "GQA"
        rows.append(
            [
                m.key,
                str(m.n_layers),
                str(m.hidden),
                str(m.n_heads),
                str(m.n_kv_heads),
                str(m.head_dim),
                str(m.intermediate),
                str(m.vocab),
                "yes" if m.tied_embeddings else "no",
                str(m.n_experts or "-"),
                str(m.experts_per_token or "-"),
                str(m.moe_intermediate or "-"),
                str(m.n_shared_experts or "-"),
                str(m.n_dense_layers),
                attn,
                str(m.max_position),
            ]
        )
    notes = ["Sources:", *(f"  {m.key} ({m.name}): {m.source}" for m in models.values())]
    return _table(header, rows) + "\n\n" + "\n".join(notes) + "\n"


def describe_profiles() -> str:
    """The calibrated profiles as a table (s, tokens, W) with each entry's source."""
    profiles = _profiles()
    header = ["profile", "model", "tp", "W_s s", "H_s s", "calib_ctx", "max_slots", "kv_blocks",
              "blk", "P_idle W", "P_nom W", "k", "x0"]  # fmt: skip
    rows = [
        [
            p.key,
            p.model,
            str(p.tp),
            f"{p.w_s:g}",
            f"{p.h_s:g}",
            str(p.calib_ctx),
            str(p.max_slots),
            str(p.kv_blocks),
            str(p.blk),
            f"{p.power_idle:g}",
            f"{p.power_nominal:g}",
            f"{p.power_k:g}",
            f"{p.power_x0:g}",
        ]
        for p in profiles.values()
    ]
    notes = ["Sources:", *(f"  {p.key} ({p.name}): {p.source}" for p in profiles.values())]
    return _table(header, rows) + "\n\n" + "\n".join(notes) + "\n"

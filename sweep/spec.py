"""Grid specs: TOML (file, text or dict) -> a validated, frozen ``GridSpec``.

A spec names the sweep axes (each becomes a dimension, in the order written) and scalar
parameter overrides; ``[gpus.NAME]``, ``[models.NAME]`` and ``[profiles.NAME]`` add catalog
entries usable by name in this spec. Every refusal is a ``SpecError`` naming the field and
what is allowed there.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sweep import catalog
from sweep.errors import SpecError

MODES = ("roofline", "calibrated")
PRECISIONS = ("float32", "float64")
TOP_LEVEL_KEYS = (
    "name",
    "description",
    "mode",
    "precision",
    "axes",
    "params",
    "gpus",
    "models",
    "profiles",
)

# bytes per weight, bytes per KV element, and which of the GPU's dense FLOP/s applies.
# fp16 runs at the bf16 tensor rate on every catalog GPU; fp4 KV is stored as fp8 (MODEL.md).
DTYPES = {
    "bf16": (2.0, 2.0, "flops_bf16"),
    "fp16": (2.0, 2.0, "flops_bf16"),
    "fp8": (1.0, 1.0, "flops_fp8"),
    "fp4": (0.5, 1.0, "flops_fp4"),
}

ROOFLINE_AXES = ("context", "gpu", "model", "tp", "dtype", "batch", "sparsity")
CALIBRATED_AXES = ("context", "gpu", "batch")
REQUIRED_AXES = {"roofline": ("context", "gpu", "model"), "calibrated": ("context", "gpu")}
AXIS_DEFAULTS = {"tp": 1, "dtype": "bf16", "batch": "saturated"}
SATURATED = 0  # the batch coordinate value meaning "B = B_max"
MAX_CONTEXT = 2**53  # tokens: integers above lose exactness as float64
MAX_AXIS_VALUES = 10_000_000  # values in one generated context range

# name: (default, check, allowed text); MODEL.md's table of symbols.
PARAMS: dict[str, tuple[Any, Any, str]] = {
    "fill": (0.5, lambda v: _real(v) and 0 < v <= 1, "a number in (0, 1]"),
    "blk": (16, lambda v: _int(v) and v >= 1, "an integer >= 1 (tokens per KV block)"),
    "mem_util": (0.90, lambda v: _real(v) and 0 < v <= 1, "a number in (0, 1]"),
    "bw_eff": (0.80, lambda v: _real(v) and 0 < v <= 1, "a number in (0, 1]"),
    "flops_eff": (0.80, lambda v: _real(v) and 0 < v <= 1, "a number in (0, 1]"),
    "t_layer": (3e-6, lambda v: _real(v) and 0 <= v < 1, "seconds, a number in [0, 1)"),
    "max_seqs": (0, lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = no cap)"),
    "expert_coverage": (
        "independent",
        lambda v: v in ("independent", "active"),
        '"independent" or "active"',
    ),
    "power": ("logistic", lambda v: v in ("logistic", "activity"), '"logistic" or "activity"'),
    "context_limit": (
        "model",
        lambda v: v in ("model", "none"),
        '"model" (infeasible beyond max_position) or "none"',
    ),
}
CALIBRATED_PARAMS = ("fill", "max_seqs")


def _real(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class GridSpec:
    name: str
    mode: str
    precision: str
    axes: dict[str, tuple]  # dimension name -> coordinate values, in spec order
    defaults: dict[str, Any]  # axes not given: single values, not dimensions
    params: dict[str, Any]
    gpus: dict[str, Any]  # catalog.GPU (roofline) or catalog.Profile (calibrated), by key
    models: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    description: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.axes.values())

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def value(self, axis: str):
        """The single value of an axis that is not a dimension."""
        return self.defaults[axis]


def read_spec_source(spec) -> tuple[dict, str, Path]:
    """(table, TOML text, base folder) from a path, TOML text or dict."""
    if isinstance(spec, dict):
        return spec, _dump_toml(spec), Path.cwd()
    if isinstance(spec, Path) or (isinstance(spec, str) and "\n" not in spec and "=" not in spec):
        path = Path(spec)
        try:
            text = path.read_text()
        except (OSError, ValueError, UnicodeDecodeError) as err:  # ValueError: a NUL in the path
            shown = str(path)[:200]
            raise SpecError("spec", f"no such file or not readable: {shown} ({err})") from None
        base = path.resolve().parent
    else:
        text, base = spec, Path.cwd()
    try:
        return tomllib.loads(text), text, base
    except tomllib.TOMLDecodeError as err:
        raise SpecError("spec", f"not valid TOML: {err}") from None


def _dump_toml(table: dict) -> str:
    import tomli_w

    try:
        return tomli_w.dumps(table)
    except TypeError as err:
        raise SpecError("spec", f"a value cannot be written as TOML: {err}") from None


def check_keys(table: dict, allowed, where: str) -> None:
    if not isinstance(table, dict):
        raise SpecError(where, f"expected a table, got {type(table).__name__}")
    for key in table:
        if key not in allowed:
            raise SpecError(
                f"{where}.{key}" if where else key, f"unknown key; allowed: {', '.join(allowed)}"
            )


def load_spec(spec, precision: str | None = None) -> GridSpec:
    """Validate a spec (path, TOML text or dict) into a GridSpec."""
    if isinstance(spec, GridSpec):
        return spec
    table, text, base = read_spec_source(spec)
    check_keys(table, TOP_LEVEL_KEYS, "")
    name = spec_name(table, "sweep")
    mode = table.get("mode", "roofline")
    if mode not in MODES:
        raise SpecError("mode", f"{mode!r} is not allowed; allowed: {', '.join(MODES)}")
    precision = spec_precision(table, precision, "float32")

    gpus, models = catalog_entries(table, mode == "calibrated", base)
    params = parse_params(
        table.get("params", {}), CALIBRATED_PARAMS if mode == "calibrated" else tuple(PARAMS)
    )
    allowed = ROOFLINE_AXES if mode == "roofline" else CALIBRATED_AXES
    axes = axes_table(table, allowed, REQUIRED_AXES[mode], f"{mode} mode needs")
    axes = {k: _axis(k, v, gpus, models) for k, v in axes.items()}
    defaults = {k: v for k, v in AXIS_DEFAULTS.items() if k in allowed and k not in axes}
    defaults = {k: _axis(k, v, gpus, models)[0] for k, v in defaults.items()}
    return GridSpec(
        name,
        mode,
        precision,
        axes,
        defaults,
        params,
        {k: gpus[k] for k in _used(axes, "gpu")},
        {k: models[k] for k in _used(axes, "model")} if mode == "roofline" else {},
        text,
        table.get("description", ""),
    )


def _used(axes, axis):
    return axes.get(axis, ())


def catalog_entries(table, calibrated: bool, base, setting: str = 'mode = "calibrated"'):
    """Catalog entries plus the spec's own, by key: profiles when ``calibrated``, else GPUs and
    models. ``setting`` names what selects calibrated entries, for the messages."""
    if calibrated:
        for key in ("gpus", "models"):
            if key in table:
                raise SpecError(key, f"not used with {setting}; add profiles with [profiles.NAME]")
        gpus = catalog.load_profiles()
        for key, entry in _table(table, "profiles").items():
            gpus[key] = catalog.profile_from_dict(key, entry, where="profiles")
        return gpus, {}
    if "profiles" in table:
        raise SpecError("profiles", f"only used with {setting}")
    gpus, models = catalog.load_gpus(), catalog.load_models()
    for key, entry in _table(table, "gpus").items():
        gpus[key] = catalog.gpu_from_dict(key, entry, where="gpus")
    for key, entry in _table(table, "models").items():
        models[key] = catalog.model_from_spec_table(key, entry, base, where="models")
    return gpus, models


def _table(table: dict, key: str) -> dict:
    """The sub-table ``key`` of a spec (empty when absent), refusing anything but a table."""
    sub = table.get(key, {})
    if not isinstance(sub, dict):
        raise SpecError(key, f"expected a table of entries by name, got {type(sub).__name__}")
    return sub


def parse_params(table, allowed, checks=PARAMS) -> dict:
    """``[params]``: defaults for ``allowed`` names, overridden by the table, each checked."""
    check_keys(table, allowed, "params")
    params = {k: checks[k][0] for k in allowed}
    for key, value in table.items():
        _, ok, text = checks[key]
        if not ok(value):
            raise SpecError(f"params.{key}", f"{value!r} is out of range; allowed: {text}")
        params[key] = value
    return params


def spec_name(table, default: str) -> str:
    name = table.get("name", default)
    if not isinstance(name, str) or not name or any(c in name for c in "/\\\0"):
        raise SpecError("name", "a non-empty string without path separators")
    return name


def spec_precision(table, precision: str | None, default: str) -> str:
    precision = precision or table.get("precision", default)
    if precision not in PRECISIONS:
        raise SpecError("precision", f"{precision!r}; allowed: {', '.join(PRECISIONS)}")
    return precision


def axes_table(table, allowed, required, needs: str) -> dict:
    """The ``[axes]`` table: only ``allowed`` names, every ``required`` one present."""
    axes = table.get("axes")
    if axes is None:
        raise SpecError("axes", f"missing; {needs} {', '.join(required)}")
    check_keys(axes, allowed, "axes")
    for name in required:
        if name not in axes:
            raise SpecError(f"axes.{name}", f"missing; {needs} it")
    return axes


def _axis(name, raw, gpus, models) -> tuple:
    return parse_axis(name, raw, lambda v, where: _axis_value(name, v, gpus, models, where))


def parse_axis(name: str, raw, check_value, range_axes=("context",)) -> tuple:
    """The distinct, checked values of ``axes.<name>``: a list, a single value, or (for
    ``range_axes``) a ``{start, stop, num, spacing}`` integer range; ``check_value(v, where)``
    validates and normalises one value."""
    where = f"axes.{name}"
    if isinstance(raw, dict):
        if name not in range_axes:
            allowed = " and ".join(range_axes)
            raise SpecError(where, f"a list of values (only {allowed} take {{start, stop, num}})")
        values = integer_range(raw, where)
    else:
        values = list(raw) if isinstance(raw, list) else [raw]
    if not values:
        raise SpecError(where, "empty; give at least one value")
    checked = tuple(check_value(v, f"{where}[{i}]") for i, v in enumerate(values))
    if len(set(checked)) != len(checked):
        dup = next(v for v in checked if checked.count(v) > 1)
        raise SpecError(where, f"value {dup!r} appears twice; axis values must be distinct")
    return checked


def integer_range(raw: dict, where: str) -> list[int]:
    """Distinct integers from ``{start, stop, num, spacing = "log" | "linear"}`` (tokens)."""
    check_keys(raw, ("start", "stop", "num", "spacing"), where)
    for key in ("start", "stop", "num"):
        if key not in raw:
            raise SpecError(f"{where}.{key}", "missing; a range needs start, stop and num")
        if not _int(raw[key]) or raw[key] < 1:
            raise SpecError(f"{where}.{key}", f"{raw[key]!r}; allowed: an integer >= 1")
    start, stop, num = raw["start"], raw["stop"], raw["num"]
    for key, limit in (("start", MAX_CONTEXT), ("stop", MAX_CONTEXT), ("num", MAX_AXIS_VALUES)):
        if raw[key] > limit:
            raise SpecError(f"{where}.{key}", f"{raw[key]}; allowed: at most {limit:,}")
    spacing = raw.get("spacing", "log")
    if spacing not in ("log", "linear"):
        raise SpecError(f"{where}.spacing", f'{spacing!r}; allowed: "log" or "linear"')
    if stop < start:
        raise SpecError(f"{where}.stop", f"{stop} is below start ({start})")
    fn = np.geomspace if spacing == "log" else np.linspace
    values = [int(v) for v in np.rint(fn(start, stop, num))]
    if len(set(values)) != len(values):
        raise SpecError(f"{where}.num", f"{num} integer values do not fit in [{start}, {stop}]")
    return values


def _axis_value(name, v, gpus, models, where):
    if name == "context":
        if not _int(v) or not 1 <= v <= MAX_CONTEXT:
            raise SpecError(where, f"{v!r}; allowed: an integer number of tokens in [1, 2**53]")
        return int(v)
    if name in ("gpu", "model"):
        known = gpus if name == "gpu" else models
        if v not in known:
            raise SpecError(where, f"unknown {name} {v!r}; allowed: {', '.join(sorted(known))}")
        return v
    if name == "tp":
        if not _int(v) or v < 1:
            raise SpecError(where, f"{v!r}; allowed: an integer >= 1 (GPUs per replica)")
        return int(v)
    if name == "dtype":
        if v not in DTYPES:
            raise SpecError(where, f"{v!r}; allowed: {', '.join(DTYPES)}")
        return v
    if name == "batch":
        if v == "saturated":
            return SATURATED
        if not _int(v) or v < 1:
            raise SpecError(where, f'{v!r}; allowed: "saturated" or an integer >= 1')
        return int(v)
    if name == "sparsity":
        if not _real(v) or not 0 < v <= 1:
            raise SpecError(where, f"{v!r}; allowed: an active expert fraction in (0, 1]")
        return float(v)
    raise AssertionError(name)

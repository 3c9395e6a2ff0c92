"""Specs -> engine Problems: which inputs each axis carries, and the point function.

The point function composes ``prepare`` (per-point inputs that depend on two axes, e.g. the
peak FLOP/s of the point's GPU *and* dtype, or the default MoE sparsity of its model) with
a kernel from ``kernels``. Gradients (``sweep.grad``) reuse the same problem with the
kernel's continuous relaxation.
"""

from __future__ import annotations

from functools import partial

import jax.numpy as jnp
import numpy as np

from kernels.calibrated import PROFILE_INPUTS, calibrated_point
from kernels.model import MODEL_FIELDS, default_sparsity
from kernels.roofline import roofline_point
from sweep.engine import Axis, Problem
from sweep.spec import DTYPES, GridSpec

GPU_FIELDS = (
    "mem_bw",
    "mem_capacity",
    "tdp",
    "power_idle",
    "power_nominal",
    "power_k",
    "power_x0",
    "flops_bf16",
    "flops_fp8",
    "flops_fp4",
)
FLOPS_KEYS = ("flops_bf16", "flops_fp8", "flops_fp4")


def model_fields(model) -> dict[str, float]:
    return {k: float(getattr(model, k)) for k in MODEL_FIELDS}


def axis_fields(spec: GridSpec, axis: str, values) -> dict[str, np.ndarray]:
    """The point inputs that the values of one axis carry."""

    def column(fn):
        rows = [fn(v) for v in values]
        return {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0]}

    if axis == "gpu":
        names = PROFILE_INPUTS if spec.mode == "calibrated" else GPU_FIELDS
        return column(lambda v: {k: float(getattr(spec.gpus[v], k)) for k in names})
    if axis == "model":
        return column(lambda v: model_fields(spec.models[v]))
    if axis == "dtype":
        return column(
            lambda v: {
                "w_bytes": DTYPES[v][0],
                "kv_bytes": DTYPES[v][1],
                "flops_index": FLOPS_KEYS.index(DTYPES[v][2]),
            }
        )
    return {axis: np.asarray(values, dtype=float)}


def coord_values(axis: str, values) -> np.ndarray:
    if axis in ("gpu", "model", "dtype"):
        return np.array(values, dtype=str)
    if axis == "sparsity":
        return np.asarray(values, dtype=float)
    return np.asarray(values, dtype=np.int64)


def roofline_prepare(p: dict) -> dict:
    """Kernel inputs of one roofline point from the gathered axis fields."""
    p = dict(p)
    i = p.pop("flops_index")
    bf16, fp8, fp4 = (p.pop(k) for k in FLOPS_KEYS)
    p["flops"] = jnp.where(i == 0, bf16, jnp.where(i == 1, fp8, fp4))
    if "sparsity" not in p:
        p["sparsity"] = default_sparsity(p)
    return p


def _roofline_fn(prepared: dict, expert_coverage, power, relaxed):
    return roofline_point(prepared, expert_coverage=expert_coverage, power=power, relaxed=relaxed)


def point_function(spec: GridSpec, relaxed: bool = False):
    """(prepare, kernel) of the spec's mode: the point function is kernel(prepare(raw))."""
    if spec.mode == "calibrated":
        return dict, partial(calibrated_point, relaxed=relaxed)
    kernel = partial(
        _roofline_fn,
        expert_coverage=spec.params["expert_coverage"],
        power=spec.params["power"],
        relaxed=relaxed,
    )
    return roofline_prepare, kernel


def scalar_inputs(spec: GridSpec) -> dict[str, float]:
    """Inputs shared by every point: parameters and the axes not swept."""
    params = spec.params
    out = {"fill": params["fill"], "max_seqs": params["max_seqs"]}
    if spec.mode == "roofline":
        out.update({k: params[k] for k in ("blk", "mem_util", "bw_eff", "flops_eff", "t_layer")})
        out["context_limit"] = 1.0 if params["context_limit"] == "model" else 0.0
    for axis, value in spec.defaults.items():
        out.update({k: v[0] for k, v in axis_fields(spec, axis, [value]).items()})
    return {k: float(v) for k, v in out.items()}


def build_axes(spec: GridSpec) -> tuple[Axis, ...]:
    return tuple(
        Axis(name, coord_values(name, values), axis_fields(spec, name, values))
        for name, values in spec.axes.items()
    )


def build_problem(spec: GridSpec, relaxed: bool = False, outputs=()) -> Problem:
    prepare, kernel = point_function(spec, relaxed)
    return Problem(
        axes=build_axes(spec),
        constants=scalar_inputs(spec),
        point_fn=lambda raw: kernel(prepare(raw)),
        dtype=np.dtype(spec.precision),
        outputs=tuple(outputs),
    )

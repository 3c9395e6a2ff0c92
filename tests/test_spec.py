"""Every refusal of a bad spec names the field and what is allowed there."""

import pytest

from sweep.errors import SpecError
from sweep.spec import load_spec

BASE = {"name": "t", "axes": {"context": [4096], "gpu": ["h100-sxm"], "model": ["llama-3.1-8b"]}}


def spec_with(**changes):
    spec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            spec.setdefault(section, {})[field] = value
        else:
            spec[section] = value
    return spec


CASES = [
    (spec_with(colour="red"), "colour", "allowed"),
    (spec_with(mode="fast"), "mode", "roofline, calibrated"),
    (spec_with(precision="float16"), "precision", "float32, float64"),
    (spec_with(name=""), "name", "non-empty"),
    (spec_with(axes__gpu=["h100"]), "axes.gpu[0]", "h100-sxm"),
    (spec_with(axes__model=["llama-4"]), "axes.model[0]", "llama-3.1-8b"),
    (spec_with(axes__context=[]), "axes.context", "empty"),
    (spec_with(axes__context=[0]), "axes.context[0]", "[1, 2**53]"),
    (spec_with(axes__context={"start": 1, "stop": 8, "num": 10**8}), "axes.context.num", "at most"),
    (spec_with(axes__context=[4096, 4096]), "axes.context", "twice"),
    (spec_with(axes__context={"start": 10, "stop": 5, "num": 3}), "axes.context.stop", "below"),
    (spec_with(axes__context={"start": 1, "stop": 4, "num": 30}), "axes.context.num", "fit"),
    (spec_with(axes__context={"start": 1, "stop": 8}), "axes.context.num", "missing"),
    (
        spec_with(axes__context={"start": 1, "stop": 8, "num": 3, "spacing": "cubic"}),
        "axes.context.spacing",
        "log",
    ),
    (spec_with(axes__tp=[0]), "axes.tp[0]", ">= 1"),
    (spec_with(axes__tp=[1.5]), "axes.tp[0]", "integer"),
    (spec_with(axes__dtype=["int4"]), "axes.dtype[0]", "bf16, fp16, fp8, fp4"),
    (spec_with(axes__batch=["full"]), "axes.batch[0]", "saturated"),
    (spec_with(axes__sparsity=[0.0]), "axes.sparsity[0]", "(0, 1]"),
    (spec_with(axes__colour=[1]), "axes.colour", "context, gpu, model"),
    (spec_with(axes={"context": [1024], "gpu": ["b200"]}), "axes.model", "missing"),
    (spec_with(params__fill=1.5), "params.fill", "(0, 1]"),
    (spec_with(params__blk=0), "params.blk", ">= 1"),
    (spec_with(params__power="flat"), "params.power", "logistic"),
    (spec_with(params__expert_coverage="all"), "params.expert_coverage", "independent"),
    (spec_with(params__gamma=1), "params.gamma", "fill"),
    (spec_with(params__max_seqs=-1), "params.max_seqs", ">= 0"),
    (spec_with(gpus={"x": {"mem_bw": -1}}), "gpus.x", ""),
    (spec_with(profiles={}), "profiles", "calibrated"),
    (
        {"mode": "calibrated", "axes": {"context": [4096], "gpu": ["h100-sxm"]}},
        "axes.gpu[0]",
        "a100, a10g, h100",
    ),
    (
        {"mode": "calibrated", "axes": {"context": [4096], "gpu": ["h100"], "model": ["x"]}},
        "axes.model",
        "context, gpu, batch",
    ),
    (
        {
            "mode": "calibrated",
            "axes": {"context": [4096], "gpu": ["h100"]},
            "params": {"bw_eff": 0.5},
        },
        "params.bw_eff",
        "fill, max_seqs",
    ),
]


@pytest.mark.parametrize(("spec", "field", "allowed"), CASES)
def test_bad_spec_is_refused_naming_field(spec, field, allowed):
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    assert err.value.field.startswith(field), str(err.value)
    assert allowed in str(err.value)


def test_bad_toml_text_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec("name = \n[axes")
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nope.toml")


def test_context_range_gives_distinct_integers():
    spec = load_spec(spec_with(axes__context={"start": 1024, "stop": 131072, "num": 8}))
    assert spec.axes["context"] == (1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
    lin = load_spec(
        spec_with(axes__context={"start": 100, "stop": 400, "num": 4, "spacing": "linear"})
    )
    assert lin.axes["context"] == (100, 200, 300, 400)


def test_spec_entries_extend_the_catalog():
    spec = load_spec(
        spec_with(
            gpus={
                "my-gpu": {
                    "name": "My GPU",
                    "mem_bw": 4e12,
                    "mem_capacity": 96e9,
                    "flops_bf16": 1e15,
                    "flops_fp8": 2e15,
                    "flops_fp4": 0,
                    "tdp": 800,
                    "source": "test",
                }
            },
            axes__gpu=["my-gpu", "h100-sxm"],
        )
    )
    assert spec.gpus["my-gpu"].mem_bw == 4e12
    assert spec.gpus["my-gpu"].power_source == "projected"
    assert spec.gpus["my-gpu"].power_idle == pytest.approx(0.43 * 800)


def test_single_values_become_one_element_axes():
    spec = load_spec(spec_with(axes__tp=4, axes__gpu="b200"))
    assert spec.axes["tp"] == (4,) and spec.axes["gpu"] == ("b200",)
    assert "tp" not in spec.defaults and spec.defaults["dtype"] == "bf16"

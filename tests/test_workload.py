"""Request-length workloads (sweep/workload.py): loaders, refusals, discretisation, pool maths."""

import jax

jax.config.update("jax_enable_x64", True)

import json  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sweep.errors import SpecError  # noqa: E402
from sweep.workload import (  # noqa: E402
    GRID_POINTS,
    MAX_REQUEST_BREAKPOINTS,
    PRESETS_FILE,
    Workload,
    cdf_at,
    from_cdf_json,
    from_requests,
    from_spec,
    list_presets,
    load_preset,
    parametric,
    partial_moments,
    pool_stats,
)

DATA = Path(PRESETS_FILE).parent


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def refused(fn, *args, **kwargs) -> str:
    with pytest.raises(SpecError) as e:
        fn(*args, **kwargs)
    return str(e.value)


# ------------------------------------------------------------------------------------------
# Exact references (slow and obvious, independent of the module)


def phi(z):
    return 0.5 * math.erfc(-z / math.sqrt(2))


def lognormal_partial(median, sigma, a, b, r):
    """int_a^b x^r f(x) dx for a lognormal: exp(r mu + r^2 s^2 / 2) [Phi(.) - Phi(.)]."""
    mu = math.log(median)
    shift = mu + r * sigma**2
    scale = math.exp(r * mu + r * r * sigma**2 / 2)
    return scale * (phi((math.log(b) - shift) / sigma) - phi((math.log(a) - shift) / sigma))


def truncated_moment(components, top, r):
    """E[L^r] of a lognormal mixture truncated to [1, top]."""
    num = sum(w * lognormal_partial(m, s, 1.0, top, r) for w, m, s in components)
    den = sum(w * lognormal_partial(m, s, 1.0, top, 0) for w, m, s in components)
    return num / den


# ------------------------------------------------------------------------------------------
# Workload construction


def test_workload_validates_and_freezes():
    w = Workload("w", [1.0, 10.0, 100.0], [0.0, 0.5, 1.0])
    assert w.output_share == 0.2 and w.tokens.dtype == np.float64
    with pytest.raises(ValueError):
        w.tokens[0] = 2.0
    with pytest.raises(AttributeError):
        w.name = "x"  # frozen
    bad = [
        (([1.0], [1.0]), "tokens"),
        (([1.0, 1.0], [0.0, 1.0]), "strictly increase"),
        (([0.0, 1.0], [0.0, 1.0]), "> 0"),
        (([1.0, 2.0, 3.0], [0.0, 1.2, 1.0]), "[0, 1]"),
        (([1.0, 2.0, 3.0], [0.0, 0.6, 0.5]), "non-decreasing"),
        (([1.0, 2.0], [0.0, 0.9]), "end at 1"),
        (([1.0, 2.0], [0.1, 1.0]), "start at 0"),
        (([1.0, 2.0], [0.0, 1.0, 1.0]), "breakpoints"),
    ]
    for (t, c), needle in bad:
        assert needle in refused(Workload, "w", t, c)
    for share in (0.0, 1.0, -0.1, True):
        assert "output_share" in refused(Workload, "w", [1.0, 2.0], [0.0, 1.0], share)


def test_padded_keeps_every_moment():
    w = load_preset("chat")
    p = w.padded(600)
    assert p.tokens.size == 600 and p.max_tokens > w.max_tokens
    for lo, hi in [(0.0, 2000.0), (500.0, 1e6), (0.0, 1e9)]:
        np.testing.assert_allclose(p.partial_moments(lo, hi), w.partial_moments(lo, hi), rtol=1e-12)
    assert "pad" in refused(w.padded, 10)


# ------------------------------------------------------------------------------------------
# CDF files


def test_cdf_json_example_loads():
    w = from_cdf_json(DATA / "example-cdf.json")
    assert w.name == "example-cdf" and not w.synthetic and w.output_share == 0.2
    assert w.tokens[0] == 256 and w.tokens[-1] == 131072 and w.cdf[-1] == 1.0
    # mean of the piecewise-linear law = sum of segment mass * segment midpoint
    t = np.array([256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 131072], float)
    c = np.array([0, 0.10, 0.35, 0.62, 0.82, 0.93, 0.98, 0.995, 1.0])
    assert w.mean() == pytest.approx(np.sum(np.diff(c) * (t[1:] + t[:-1]) / 2), rel=1e-12)


def test_cdf_json_first_fraction_above_zero_prepends_one_token(tmp_path):
    p = write(tmp_path, "c.json", "[[100, 0.25], [200, 1.0]]")
    w = from_cdf_json(p, output_share=0.3)
    np.testing.assert_array_equal(w.tokens, [1.0, 100.0, 200.0])
    one = from_cdf_json(write(tmp_path, "one.json", "[[400, 1.0]]"))  # uniform on (1, 400]
    assert one.mean() == pytest.approx(200.5)
    np.testing.assert_array_equal(w.cdf, [0.0, 0.25, 1.0])
    assert w.output_share == 0.3
    # mass 0.25 spread uniformly over (1, 100]
    assert float(w.cdf_at(50.5)) == pytest.approx(0.125)


def test_cdf_json_last_fraction_snapped_within_tolerance(tmp_path):
    w = from_cdf_json(write(tmp_path, "c.json", "[[10, 0], [20, 0.9999999999999]]"))
    assert w.cdf[-1] == 1.0


BAD_CDFS = [
    # (file text, line, fragment of the reason)
    ("[\n  [100, 0.0],\n  [200, 0.5],\n  [300, 0.4],\n  [400, 1.0]\n]", 4, "decreases"),
    ("[\n  [100, 0.0],\n  [200, 1.2],\n  [400, 1.0]\n]", 3, "outside [0, 1]"),
    ("[\n  [100, 0.0],\n  [200, -0.1],\n  [400, 1.0]\n]", 3, "outside [0, 1]"),
    ("[\n  [100, 0.0],\n  [200, 0.5],\n  [400, 0.9]\n]", 4, "must be 1"),
    ("[\n  [100, 0.0],\n  [100, 0.5],\n  [400, 1.0]\n]", 3, "strictly increase"),
    ("[\n  [100, 0.0],\n  [50, 0.5],\n  [400, 1.0]\n]", 3, "strictly increase"),
    ("[\n  [-5, 0.0],\n  [400, 1.0]\n]", 2, "> 0"),
    ("[\n  [100, 0.0],\n  [200, 0.5]\n  [400, 1.0]\n]", 4, "not valid JSON"),
    ('[\n  [100, 0.0],\n  [200, "half"],\n  [400, 1.0]\n]', 3, "two numbers"),
    ("[\n  [100, 0.0],\n  [200, 0.5, 7],\n  [400, 1.0]\n]", 3, "two numbers"),
    ('{"breakpoints": []}', 1, "JSON list"),
    ("[]", 1, "empty"),
    ("[[400, 0.0]]", 1, "must be 1"),
    ("[[1, 0.5], [400, 1.0]]", 1, "fraction 0"),
]


@pytest.mark.parametrize("text,line,reason", BAD_CDFS)
def test_cdf_json_refusals_name_file_line_and_reason(tmp_path, text, line, reason):
    p = write(tmp_path, "bad.json", text)
    msg = refused(from_cdf_json, p)
    assert "bad.json" in msg and f"line {line}:" in msg and reason in msg


def test_cdf_json_entry_index_and_one_line_layout(tmp_path):
    p = write(tmp_path, "one.json", "[[10, 0], [20, 0.5], [30, 0.4], [40, 1]]")
    msg = refused(from_cdf_json, p)
    assert "line 1: entry 2:" in msg


def test_cdf_json_missing_file(tmp_path):
    assert "cannot read" in refused(from_cdf_json, tmp_path / "nope.json")


# ------------------------------------------------------------------------------------------
# Requests files


def test_requests_csv_mean_and_share_by_hand():
    w = from_requests(DATA / "example-requests.csv")
    # example-requests.csv, by hand: totals 1002, 1932, 500, 3638, 800, 9960, 1492, 400, 4922,
    # 1002, 21504, 944 -> sum 48096, mean 48096 / 12 = 4008; outputs sum 4121 -> share 4121/48096
    assert w.mean() == pytest.approx(4008.0, rel=1e-12)
    assert w.output_share == pytest.approx(4121 / 48096, rel=1e-12)
    assert w.params["requests"] == 12 and w.params["distinct_lengths"] == 11
    assert not w.synthetic
    # exact mode: each length L is uniform on (L - 1/2, L + 1/2]
    assert float(w.cdf_at(1002.5)) == pytest.approx(6 / 12)
    assert float(w.cdf_at(1001.5)) == pytest.approx(4 / 12)
    # E[L^2] = mean of squares + 1/12 (the half-token spread)
    totals = np.array([1002, 1932, 500, 3638, 800, 9960, 1492, 400, 4922, 1002, 21504, 944.0])
    _, _, second = w.partial_moments(0.0, 1e6)
    assert float(second) == pytest.approx(np.mean(totals**2) + 1 / 12, rel=1e-12)


def test_requests_aliases_and_jsonl(tmp_path):
    csv = write(tmp_path, "a.csv", "Input_Tokens, output_len ,x\n90,10,a\n\n190,10,b\n")
    w = from_requests(csv)
    assert w.mean() == pytest.approx(150.0) and w.output_share == pytest.approx(20 / 300)
    jl = write(
        tmp_path,
        "b.jsonl",
        '{"prompt_len": 90, "completion_tokens": 10}\n\n'
        '{"prompt_len": 190.0, "completion_tokens": 10}\n',
    )
    v = from_requests(jl)
    np.testing.assert_allclose(v.tokens, w.tokens)
    np.testing.assert_allclose(v.cdf, w.cdf)
    assert v.output_share == w.output_share


BAD_REQUESTS = [
    ("r.csv", "prompt_tokens,tokens_out\n10,2\n", 1, "output-length"),
    ("r.csv", "id,output_tokens\n1,2\n", 1, "prompt-length"),
    ("r.csv", "prompt_tokens,input_tokens,output_tokens\n1,1,2\n", 1, "ambiguous"),
    ("r.csv", "prompt_tokens,output_tokens\n10,2\n12.5,3\n", 3, "not an integer"),
    ("r.csv", "prompt_tokens,output_tokens\n10,2\nten,3\n", 3, "not an integer"),
    ("r.csv", "prompt_tokens,output_tokens\n10,2\n\n-4,3\n", 4, "negative"),
    ("r.csv", "prompt_tokens,output_tokens\n10,2\n0,0\n", 3, "is 0"),
    ("r.csv", "prompt_tokens,output_tokens\n10,2\n7\n", 3, "columns"),
    ("r.jsonl", '{"prompt_tokens": 1, "output_tokens": 2}\n{"prompt_tokens": 1\n', 2, "JSON"),
    ("r.jsonl", '{"prompt_tokens": 1, "output_tokens": 2}\n{"prompt_tokens": 1}\n', 2, "output"),
    ("r.jsonl", '{"prompt_tokens": 1, "output_tokens": -2}\n', 1, "negative"),
    ("r.jsonl", '{"prompt_tokens": true, "output_tokens": 2}\n', 1, "not an integer"),
    ("r.jsonl", "[1, 2]\n", 1, "JSON object"),
    ("r.csv", "", 1, "header"),
]


@pytest.mark.parametrize("name,text,line,reason", BAD_REQUESTS)
def test_requests_refusals_name_file_line_and_reason(tmp_path, name, text, line, reason):
    msg = refused(from_requests, write(tmp_path, name, text))
    assert name in msg and f"line {line}:" in msg and reason in msg


def test_requests_refusals_without_a_line(tmp_path):
    assert "no requests" in refused(
        from_requests, write(tmp_path, "e.csv", "prompt_tokens,output_tokens\n")
    )
    assert "output tokens sum to 0" in refused(
        from_requests, write(tmp_path, "z.csv", "prompt_tokens,output_tokens\n5,0\n")
    )
    assert ".csv, .jsonl" in refused(from_requests, write(tmp_path, "r.txt", "x"))


def test_requests_many_lengths_grouped_keeps_mean_and_shape(tmp_path):
    rng = np.random.default_rng(7)
    total = np.maximum(2, np.round(rng.lognormal(math.log(2000), 1.2, 20_000))).astype(int)
    out = np.maximum(1, total // 5)
    lines = ["prompt_tokens,output_tokens"] + [
        f"{t - o},{o}" for t, o in zip(total, out, strict=True)
    ]
    w = from_requests(write(tmp_path, "big.csv", "\n".join(lines)))
    assert w.params["breakpoints_mode"] == "grouped"
    assert w.tokens.size <= MAX_REQUEST_BREAKPOINTS
    assert w.mean() == pytest.approx(total.mean(), rel=1e-10)  # exact by construction
    assert w.output_share == pytest.approx(out.sum() / total.sum(), rel=1e-12)
    # Shape: the piecewise-linear CDF is exact at group edges; in between it is off by at most
    # one group's mass (<= 1/85 of the requests, plus a heavy atom of its own).
    grid = np.unique(total) + 0.5
    empirical = np.searchsorted(np.sort(total), grid, side="right") / total.size
    assert np.max(np.abs(np.asarray(w.cdf_at(grid)) - empirical)) < 1.5 / 85
    # the second moment is not kept exactly; for this sample it is within 1e-3
    second = float(w.partial_moments(0.0, w.max_tokens)[2])
    assert second == pytest.approx(np.mean(total.astype(float) ** 2), rel=1e-3)


# ------------------------------------------------------------------------------------------
# Parametric laws


def log_step(top, points=GRID_POINTS):
    """delta: spacing of the log grid in ln(tokens) (consecutive breakpoints differ by e^delta)."""
    return math.log(top) / (points - 1)


def truncated_pdf(components, top, x):
    z = sum(w * lognormal_partial(m, s, 1.0, top, 0) for w, m, s in components)
    f = sum(
        w
        * math.exp(-0.5 * ((math.log(x) - math.log(m)) / s) ** 2)
        / (x * s * math.sqrt(2 * math.pi))
        for w, m, s in components
    )
    return f / z


def check_discretisation(w, components, top):
    """Raw moments r = 1, 2 of a discretised law against the exact truncated ones.

    Tolerance from the grid resolution. Linear interpolation of the CDF on a segment of width
    h = delta x keeps its mass and replaces the density by its mean, which shifts int g dF on
    the segment by -g'(x) f'(x) h^3 / 12. Summed over the log grid (h = delta x) and integrated
    by parts, with g = x^r, the relative error of E[L^r] is

        delta^2 / 12 * (r (r + 1) - r [x^(r+1) f(x)]_1^max / E[L^r]) + O(delta^4),

    i.e. delta^2 / 6 for the mean and delta^2 / 2 for E[L^2] when the truncation cuts little
    (delta = ln(131072) / 511 = 0.0230: 8.9e-5 and 2.7e-4). We check that prediction to within
    1e-3 delta^2 (observed: < 1e-4 delta^2), and the plain bound |error| <= delta^2.
    """
    d = log_step(top)
    for r in (1, 2):
        exact = truncated_moment(components, top, r)
        got = float(w.partial_moments(0.0, top)[r])
        rel = got / exact - 1
        edge = top ** (r + 1) * truncated_pdf(components, top, top) - truncated_pdf(
            components, top, 1.0
        )
        predicted = d**2 / 12 * (r * (r + 1) - r * edge / exact)
        assert abs(rel - predicted) < 1e-3 * d**2, (r, rel, predicted)
        assert abs(rel) <= d**2


@pytest.mark.parametrize(
    "median,sigma,top",
    [(1024, 1.0, 131072), (6144, 0.5, 131072), (300, 2.0, 8192), (100, 1.5, 4096)],
)
def test_lognormal_moments_against_exact(median, sigma, top):
    w = parametric("lognormal", median=median, sigma=sigma, max=top)
    assert w.synthetic and w.tokens.size == GRID_POINTS
    assert w.tokens[0] == 1.0 and w.tokens[-1] == pytest.approx(top)
    comps = [(1.0, median, sigma)]
    check_discretisation(w, comps, top)
    # the breakpoint values are the exact truncated CDF
    f = [lognormal_partial(median, sigma, 1.0, x, 0) for x in w.tokens]
    np.testing.assert_allclose(w.cdf, np.array(f) / f[-1], atol=1e-12)
    # untruncated mean, for scale: the truncation at max is visible only for the wide law
    if top == 131072:
        assert w.mean() == pytest.approx(median * math.exp(sigma**2 / 2), rel=1e-3)


def test_lognormal_without_max_ends_at_six_sigma():
    w = parametric("lognormal", median=1000, sigma=0.5)
    assert w.max_tokens == pytest.approx(1000 * math.exp(3.0))
    assert w.params["mass_in_range"] > 1 - 2e-9


def test_mixture_moments_against_exact():
    comps = [(0.7, 800.0, 0.9), (0.3, 20000.0, 0.6)]
    w = parametric(
        "mixture", components=[dict(weight=a, median=b, sigma=c) for a, b, c in comps], max=65536
    )
    check_discretisation(w, comps, 65536)
    agent = load_preset("agent")
    comps = [(c["weight"], c["median"], c["sigma"]) for c in agent.params["components"]]
    check_discretisation(agent, comps, agent.max_tokens)


BAD_LAWS = [
    (dict(kind="gamma", median=1, sigma=1), "workload.kind", "allowed: lognormal, mixture"),
    (dict(kind="lognormal", sigma=1), "workload.median", "required"),
    (dict(kind="lognormal", median=100, sigma=0), "workload.sigma", "> 0"),
    (dict(kind="lognormal", median=100, sigma="1"), "workload.sigma", "> 0"),
    (dict(kind="lognormal", median=100, sigma=1, max=1), "workload.max", "exceed"),
    (dict(kind="lognormal", median=1e9, sigma=0.1, max=100), "workload.max", "1e-9 of the law"),
    (
        dict(kind="lognormal", median=100, sigma=1, mean=3),
        "workload.mean",
        "allowed: max, median, sigma",
    ),
    (dict(kind="mixture", components=[]), "workload.components", "non-empty"),
    (
        dict(kind="mixture", components=[dict(weight=0.5, median=10, sigma=1)]),
        "workload.components",
        "sum to 1",
    ),
    (
        dict(kind="mixture", components=[dict(weight=1, median=10, sigma=1, shape=2)]),
        "workload.components[0].shape",
        "allowed: median, sigma, weight",
    ),
    (dict(kind="mixture", components=[3]), "workload.components[0]", "table"),
]


@pytest.mark.parametrize("spec,field,reason", BAD_LAWS)
def test_parametric_refusals(spec, field, reason):
    spec = dict(spec)
    with pytest.raises(SpecError) as e:
        parametric(spec.pop("kind"), **spec)
    assert e.value.field == field and reason in str(e.value)


# ------------------------------------------------------------------------------------------
# Presets


def test_presets_load_synthetic_and_documented():
    import tomllib

    assert list_presets() == ["chat", "rag", "agent"]
    doc = tomllib.loads(PRESETS_FILE.read_text())
    for name in list_presets():
        w = load_preset(name)
        assert w.synthetic is True and w.name == name
        assert "ynthetic" in w.description and "not measured" in w.params["source"]
        assert w.tokens.size == GRID_POINTS and w.max_tokens == pytest.approx(131072)
        # the mean written in presets.toml is the mean of the discretised preset
        assert w.mean() == pytest.approx(doc[name]["mean_tokens"], rel=1e-3)
    assert 900 < float(np.interp(0.5, load_preset("chat").cdf, load_preset("chat").tokens)) < 1100
    assert 1 - float(load_preset("agent").cdf_at(65536)) > 0.03  # heavy tail
    msg = refused(load_preset, "code")
    assert "'code'" in msg and "chat, rag, agent" in msg


def test_presets_toml_figures_in_comments():
    chat, rag, agent = (load_preset(n) for n in ("chat", "rag", "agent"))
    assert 1 - float(chat.cdf_at(8192)) == pytest.approx(0.019, abs=5e-4)
    assert 1 - float(rag.cdf_at(16384)) == pytest.approx(0.025, abs=5e-4)
    assert 1 - float(agent.cdf_at(32768)) == pytest.approx(0.135, abs=5e-4)
    assert 1 - float(agent.cdf_at(65536)) == pytest.approx(0.049, abs=5e-4)
    assert 1 - agent.params["mass_in_range"] == pytest.approx(0.0087, abs=5e-5)


# ------------------------------------------------------------------------------------------
# Spec tables


def test_from_spec_every_form(tmp_path):
    assert from_spec({"preset": "rag"}).name == "rag"
    w = from_spec({"preset": "chat", "output_share": 0.3, "name": "c2"})
    assert w.output_share == 0.3 and w.name == "c2" and w.synthetic
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "c.json", "[[10, 0], [20, 1]]")
    w = from_spec({"cdf": "sub/c.json", "output_share": 0.25}, tmp_path)
    assert w.output_share == 0.25 and w.mean() == pytest.approx(15.0)
    write(tmp_path, "r.csv", "prompt_tokens,output_tokens\n8,2\n")
    assert from_spec({"requests": "r.csv"}, base_dir=tmp_path).output_share == pytest.approx(0.2)
    w = from_spec(
        {"kind": "lognormal", "median": 1500, "sigma": 1.0, "max": 131072, "output_share": 0.2}
    )
    assert w.params["median"] == 1500
    w = from_spec(
        {
            "kind": "mixture",
            "components": [
                {"weight": 0.7, "median": 1000, "sigma": 0.8},
                {"weight": 0.3, "median": 9000, "sigma": 0.5},
            ],
        }
    )
    assert w.params["kind"] == "mixture"


def test_from_spec_refusals(tmp_path):
    with pytest.raises(SpecError) as e:
        from_spec({"preset": "chat", "colour": "red"}, field="fleet.workload")
    assert e.value.field == "fleet.workload.colour"
    assert "allowed: description, name, output_share, preset" in str(e.value)
    with pytest.raises(SpecError) as e:
        from_spec({"kind": "lognormal", "median": 10, "sigma": 1, "components": []})
    assert e.value.field == "workload.components"
    assert "exactly one" in refused(from_spec, {"output_share": 0.2})
    assert "several source keys" in refused(from_spec, {"preset": "chat", "cdf": "x.json"})
    assert "workload.output_share" in refused(from_spec, {"requests": "r.csv", "output_share": 0.2})
    assert "workload.output_share" in refused(from_spec, {"preset": "chat", "output_share": 1.5})
    assert "workload.preset" in refused(from_spec, {"preset": 3})
    # a file error through the spec names the spec field, the file and the line
    write(tmp_path, "c.json", "[\n[10, 0],\n[20, 1.2]\n]")
    msg = refused(from_spec, {"cdf": "c.json"}, tmp_path)
    assert msg.startswith("workload.cdf: ") and "c.json, line 3:" in msg
    write(tmp_path, "r.csv", "prompt_tokens,output_tokens\n8,-2\n")
    msg = refused(from_spec, {"requests": "r.csv"}, tmp_path)
    assert msg.startswith("workload.requests: ") and "r.csv, line 2:" in msg and "negative" in msg
    assert "cannot read" in refused(from_spec, {"cdf": "missing.json"}, tmp_path)


# ------------------------------------------------------------------------------------------
# Array helpers


T = np.array([1.0, 100.0, 400.0, 1000.0, 5000.0])
C = np.array([0.0, 0.2, 0.2, 0.7, 1.0])  # a flat segment (100, 400]
DENS = np.diff(C) / np.diff(T)


def slow_moments(lo, hi, n=20_000):
    """Midpoint rule, segment by segment, on the piecewise-constant density (independent of
    partial_moments; exact for mass and first moment, O(1/n^2) for the second)."""
    total = np.zeros(3)
    for i, d in enumerate(DENS):
        a, b = max(lo, T[i]), min(hi, T[i + 1])
        if b <= a:
            continue
        x = np.linspace(a, b, n + 1)
        mid, dx = (x[1:] + x[:-1]) / 2, np.diff(x)
        total += [np.sum(d * dx), np.sum(d * dx * mid), np.sum(d * dx * mid**2)]
    return total


def test_cdf_at_interpolates_and_clamps():
    x = jnp.array([0.0, 0.5, 1.0, 50.5, 250.0, 700.0, 5000.0, 1e7])
    np.testing.assert_allclose(cdf_at(T, C, x), [0, 0, 0, 0.1, 0.2, 0.45, 1.0, 1.0], atol=1e-15)
    g = jax.vmap(jax.grad(lambda v: cdf_at(T, C, v)))(jnp.array([50.0, 250.0, 700.0, 9000.0]))
    np.testing.assert_allclose(g, [DENS[0], 0.0, DENS[2], 0.0], rtol=1e-12)


@pytest.mark.parametrize(
    "lo,hi", [(0.0, 1e9), (50.0, 700.0), (120.0, 300.0), (999.0, 1001.0), (800.0, 4999.0)]
)
def test_partial_moments_against_slow_integration(lo, hi):
    got = np.array(partial_moments(T, C, lo, hi))
    np.testing.assert_allclose(got, slow_moments(lo, hi), rtol=1e-8, atol=1e-12)


def test_partial_moments_empty_and_reversed():
    for lo, hi in [(300.0, 300.0), (700.0, 200.0), (6000.0, 9000.0), (0.0, 0.5)]:
        assert np.all(np.array(partial_moments(T, C, lo, hi)) == 0.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=131072.0), min_size=0, max_size=12))
def test_partition_sums_to_whole(cuts):
    w = load_preset("agent")
    edges = np.unique(np.r_[0.0, np.asarray(cuts, dtype=np.float64), w.max_tokens])
    parts = np.array([w.partial_moments(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)])
    whole = np.array(w.partial_moments(0.0, w.max_tokens))
    np.testing.assert_allclose(parts.sum(axis=0), whole, rtol=1e-12)
    assert whole[0] == pytest.approx(1.0, abs=1e-14)
    assert whole[1] == pytest.approx(w.mean(), rel=1e-12)


def test_partition_sums_to_whole_float32():
    w = load_preset("chat")
    t32, c32 = jnp.asarray(w.tokens, jnp.float32), jnp.asarray(w.cdf, jnp.float32)
    edges = jnp.array([0.0, 700.0, 1024.0, 2048.0, 8192.0, 40000.0, 131072.0], jnp.float32)
    parts = jax.vmap(lambda a, b: jnp.stack(partial_moments(t32, c32, a, b)))(edges[:-1], edges[1:])
    assert parts.dtype == jnp.float32
    whole = jnp.stack(partial_moments(t32, c32, edges[0], edges[-1]))
    np.testing.assert_allclose(parts.sum(axis=0), whole, rtol=2e-6)
    np.testing.assert_allclose(whole, w.partial_moments(0.0, 131072.0), rtol=2e-5)


def test_derivatives_in_the_boundaries_are_the_density():
    w = load_preset("rag")
    t, c = w.tokens, w.cdf
    his = np.array([2500.0, 6000.0, 6144.7, 11000.0, 30000.0])
    seg = np.searchsorted(t, his) - 1
    density = (c[seg + 1] - c[seg]) / (t[seg + 1] - t[seg])
    h = 1e-3  # all points lie well inside a segment (> 10 tokens wide here)
    mass = lambda lo, hi: partial_moments(t, c, lo, hi)[0]  # noqa: E731
    fd = np.array([(mass(0.0, x + h) - mass(0.0, x - h)) / (2 * h) for x in his])
    np.testing.assert_allclose(fd, density, rtol=1e-7)
    d_hi = jax.vmap(jax.grad(mass, argnums=1), in_axes=(None, 0))(0.0, jnp.asarray(his))
    np.testing.assert_allclose(d_hi, density, rtol=1e-10)
    d_lo = jax.vmap(jax.grad(mass, argnums=0), in_axes=(0, None))(jnp.asarray(his), 131072.0)
    np.testing.assert_allclose(d_lo, -density, rtol=1e-10)
    # first and second moments: hi * density and hi^2 * density
    first = jax.grad(lambda x: partial_moments(t, c, 1000.0, x)[1])
    second = jax.grad(lambda x: partial_moments(t, c, 1000.0, x)[2])
    np.testing.assert_allclose(first(his[1]), his[1] * density[1], rtol=1e-10)
    np.testing.assert_allclose(second(his[1]), his[1] ** 2 * density[1], rtol=1e-10)


def test_partial_moments_continuous_across_breakpoints():
    w = load_preset("chat")
    for k in (100, 300, 400):
        b = w.tokens[k]
        below = np.array(w.partial_moments(0.0, b * (1 - 1e-12)))
        above = np.array(w.partial_moments(0.0, b * (1 + 1e-12)))
        np.testing.assert_allclose(below, above, rtol=1e-9)


def test_pool_stats():
    # one uniform segment (a, b]: mean (a + b) / 2, scv (b - a)^2 / (3 (a + b)^2)
    a, b = 1000.0, 3000.0
    s = pool_stats(jnp.array([a, b]), jnp.array([0.0, 1.0]), 0.25, 0.0, 1e6)
    assert float(s.mass) == pytest.approx(1.0)
    assert float(s.mean_tokens) == pytest.approx(2000.0)
    assert float(s.mean_output_tokens) == pytest.approx(500.0)
    assert float(s.mean_prompt_tokens) == pytest.approx(1500.0)
    assert float(s.second_moment_tokens) == pytest.approx((a * a + a * b + b * b) / 3)
    assert float(s.scv) == pytest.approx((b - a) ** 2 / (3 * (a + b) ** 2))
    # two pools of a preset: masses add to 1, rate-weighted means recover the whole
    w = load_preset("agent")
    short, long_ = w.pool(0.0, 16384.0), w.pool(16384.0, w.max_tokens)
    assert float(short.mass + long_.mass) == pytest.approx(1.0)
    both = short.mass * short.mean_tokens + long_.mass * long_.mean_tokens
    assert float(both) == pytest.approx(w.mean(), rel=1e-12)
    # an empty pool is NaN, explicitly, and its gradient stays finite
    empty = w.pool(2e5, 3e5)
    assert float(empty.mass) == 0.0 and math.isnan(float(empty.mean_tokens))
    g = jax.grad(lambda hi: jnp.nan_to_num(w.pool(2e5, hi).mean_tokens) + w.pool(0.0, hi).mass)(3e5)
    assert np.isfinite(g)


def test_helpers_jit_and_vmap_over_boundaries_and_workloads():
    ws = [load_preset(n) for n in list_presets()]
    tokens = jnp.stack([w.tokens for w in ws])
    cdfs = jnp.stack([w.cdf for w in ws])
    boundaries = jnp.array([2048.0, 8192.0, 32768.0])
    f = jax.jit(
        jax.vmap(
            jax.vmap(lambda t, c, b: partial_moments(t, c, 0.0, b)[0], in_axes=(None, None, 0)),
            in_axes=(0, 0, None),
        )
    )
    got = np.asarray(f(tokens, cdfs, boundaries))
    want = np.array([[float(w.cdf_at(b)) for b in boundaries] for w in ws])
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_example_files_are_valid_json_and_csv():
    entries = json.loads((DATA / "example-cdf.json").read_text())
    assert len(entries) == 9
    assert (DATA / "example-requests.csv").read_text().startswith("request_id,prompt_tokens")

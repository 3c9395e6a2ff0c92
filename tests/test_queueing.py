"""Tests for kernels/queueing.py: Erlang B/C, Kimura's M/G/c wait quantile, fleet sizing.

References are independent of the kernels: the Erlang-B recursion B(0) = 1,
B(k) = a B(k-1) / (k + a B(k-1)) (run in logs so that tiny B do not underflow), mpmath where
installed, and closed forms.
"""

import math

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from jax.scipy.special import gammaincc, gammaln  # noqa: E402
from scipy.special import gammaln as sp_gammaln  # noqa: E402

from kernels.queueing import (  # noqa: E402
    _bisect_min_servers,
    erlang_b,
    erlang_c,
    log_erlang_b,
    log_erlang_c,
    mgc_wait_quantile,
    min_servers,
    min_servers_int,
)

EPS32 = float(np.finfo(np.float32).eps)


# ---------------------------------------------------------------- references (plain Python)
def log_b_recursion(c, a):
    """log Erlang-B for integer c by the recursion B(k) = a B(k-1) / (k + a B(k-1)), in logs."""
    log_b = 0.0
    for k in range(1, c + 1):
        log_b = math.log(a) + log_b - math.log(k + a * math.exp(log_b))
    return log_b


def log_b_recursion_table(c_max, a):
    """[log B(k, a) for k = 0..c_max] for one load a (the same recursion, all k at once)."""
    out = [0.0]
    for k in range(1, c_max + 1):
        out.append(math.log(a) + out[-1] - math.log(k + a * math.exp(out[-1])))
    return out


def log_b_recursion_np(c, a):
    """The recursion vectorised over points (numpy, float64): c int array, a float array."""
    log_b = np.zeros_like(a)
    for k in range(1, int(c.max()) + 1):
        step = np.log(a) + log_b - np.log(k + a * np.exp(log_b))
        log_b = np.where(k <= c, step, log_b)
    return log_b


def log_c_from_log_b(c, a, log_b):
    """log Erlang C = log B - log(1 - rho (1 - B)), rho = a / c < 1."""
    b = np.exp(log_b)
    return log_b - np.log((c - a) / c + a / c * b)


def wait_quantile_ref(c, a, service_mean_s, scv, q, log_b):
    """Kimura-scaled M/M/c q-quantile: (1 + scv)/2 * max(0, ln(C / (1 - q))) / (c mu - lambda)."""
    mu = 1.0 / service_mean_s
    lam = a * mu
    log_c = log_c_from_log_b(c, a, log_b)
    return 0.5 * (1.0 + scv) * max(0.0, log_c - math.log(1.0 - q)) / (c * mu - lam)


# ---------------------------------------------------------------- closed forms
def test_closed_forms_catch_a_wrong_formula():
    # c = 2, a = 1: B = (1/2) / (1 + 1 + 1/2) = 1/5, C = 2 B / (2 - (1 - B)) = 1/3.
    assert float(erlang_b(2.0, 1.0)) == pytest.approx(0.2, rel=1e-14)
    assert float(erlang_c(2.0, 1.0)) == pytest.approx(1.0 / 3.0, rel=1e-14)
    for a in (0.01, 0.3, 0.9, 5.0, 700.0, 1e4):
        assert float(erlang_b(1.0, a)) == pytest.approx(a / (1.0 + a), rel=1e-13)  # M/M/1/1
    for a in (0.01, 0.3, 0.9, 0.999):
        assert float(erlang_c(1.0, a)) == pytest.approx(a, rel=1e-13)  # M/M/1: C = rho
    # c -> 0: B(0, a) = 1 by continuity (gammaincc(1, a) = e^-a cancels the prefactor).
    assert float(erlang_b(1e-12, 3.0)) == pytest.approx(1.0, rel=1e-10)


# ---------------------------------------------------------------- against the recursion
RATIOS_BELOW = [0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99]
RATIOS_ABOVE = [1.0, 1.01, 1.1, 1.5, 2.0, 5.0, 20.0]


def _grid(ratios):
    c = np.repeat(np.arange(1, 1001), len(ratios))
    a = c * np.tile(np.asarray(ratios), 1000)
    return c, a


def test_numpy_recursion_equals_plain_python_recursion():
    c, a = _grid([0.1, 0.9, 2.0])
    ref = log_b_recursion_np(c, a)
    for i in (0, 5, 300, 1500, 2999):
        assert ref[i] == pytest.approx(log_b_recursion(int(c[i]), float(a[i])), rel=1e-13)


@pytest.mark.parametrize("ratios", [RATIOS_BELOW, RATIOS_ABOVE], ids=["a<c", "a>=c"])
def test_erlang_b_matches_recursion(ratios):
    c, a = _grid(ratios)
    ref = log_b_recursion_np(c, a)
    got = np.asarray(jax.jit(log_erlang_b)(c.astype(float), a))
    # |delta log B| <= 1e-9 is a relative error <= 1e-9 in B, also where B underflows float64.
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    normal = ref > math.log(1e-300)
    b = np.asarray(jax.jit(erlang_b)(c.astype(float), a))
    np.testing.assert_allclose(b[normal], np.exp(ref[normal]), rtol=1e-9, atol=0)
    assert np.all((b >= 0) & (b <= 1))


def test_erlang_c_matches_recursion():
    c, a = _grid(RATIOS_BELOW)
    ref = log_c_from_log_b(c, a, log_b_recursion_np(c, a))
    got = np.asarray(jax.jit(log_erlang_c)(c.astype(float), a))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    normal = ref > math.log(1e-300)
    cc = np.asarray(jax.jit(erlang_c)(c.astype(float), a))
    np.testing.assert_allclose(cc[normal], np.exp(ref[normal]), rtol=1e-9, atol=0)
    # C >= B always (a waiting customer in M/M/c is a blocked one in M/M/c/c, re-weighted).
    assert np.all(cc >= np.asarray(erlang_b(c.astype(float), a)) * (1 - 1e-12))


def test_erlang_c_saturated_is_one():
    for c, a in [(1.0, 1.0), (10.0, 10.0), (10.0, 11.0), (1e6, 2e6), (3.5, 1e9)]:
        assert float(erlang_c(c, a)) == 1.0
        assert float(log_erlang_c(c, a)) == 0.0
        g = jax.grad(erlang_c, argnums=(0, 1))(c, a)
        assert all(float(x) == 0.0 for x in g)


# ---------------------------------------------------------------- the dangerous regime
def test_far_above_saturation_where_gammaincc_underflows():
    """a >> c: Q(c + 1, a) underflows to 0 and the naive log formula gives inf; ours does not."""

    def naive(c, a):
        return jnp.exp(c * jnp.log(a) - a - gammaln(c + 1) - jnp.log(gammaincc(c + 1, a)))

    for c, a in [(1.0, 1000.0), (1e4, 1.5e4), (1e6, 1.1e6), (1000.0, 5000.0)]:
        assert not np.isfinite(float(naive(c, a)))
        b = float(erlang_b(c, a))
        assert 0.0 < b < 1.0
        assert b == pytest.approx(1.0 - c / a, rel=2.0 * c / (a - c) ** 2 + 1e-12)  # fluid limit
        g = jax.grad(erlang_b, argnums=(0, 1))(c, a)
        assert np.isfinite(g).all() and float(g[0]) < 0 < float(g[1])
    # integer c against the recursion, far above c
    for c, a in [(1, 1000.0), (7, 3000.0), (1000, 5000.0), (10000, 15000.0)]:
        assert float(log_erlang_b(float(c), a)) == pytest.approx(log_b_recursion(c, a), abs=1e-12)


@pytest.mark.parametrize("c", [0.3, 1.0, 10.0, 1e3, 1e6])
def test_branches_agree_at_the_switch(c):
    """The Gauss-Laguerre branch takes over at a - c = 3 max(sqrt c, 1); both sides agree."""
    a0 = c + 3.0 * max(math.sqrt(c), 1.0)
    delta = 1e-9 * a0
    below, above = a0 - delta, a0 + delta
    slope = float(jax.grad(log_erlang_b, argnums=1)(c, a0))
    jump = float(log_erlang_b(c, above)) - float(log_erlang_b(c, below)) - 2 * delta * slope
    assert abs(jump) <= 1e-12 + 2e-15 * c  # the gammaincc side loses ~eps * c log a
    gb = jax.grad(log_erlang_b, argnums=(0, 1))(c, below)
    ga = jax.grad(log_erlang_b, argnums=(0, 1))(c, above)
    np.testing.assert_allclose(np.array(gb), np.array(ga), rtol=1e-6)


def test_against_mpmath_up_to_a_million_servers():
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40
    for c in (10.5, 1e3, 1e4, 1e5, 1e6):
        for r in (0.5, 0.9, 0.99, 1.0, 1.001, 1.01, 1.1, 2.0):
            a = c * r
            ref = mp.mpf(c) * mp.log(a) - a - mp.log(mp.gammainc(mp.mpf(c) + 1, a))
            tol = 1e-13 * max(1.0, c * abs(math.log(a)))  # eps-scaled prefactor cancellation
            assert float(log_erlang_b(c, a)) == pytest.approx(float(ref), abs=tol), (c, r)


# ---------------------------------------------------------------- large c, gradients
@pytest.mark.parametrize("c", [1e4, 1e5, 1e6])
@pytest.mark.parametrize("rho", [0.5, 0.9, 0.99])
def test_stable_at_large_c(c, rho):
    a = rho * c
    for f in (erlang_b, erlang_c):
        v = float(f(c, a))
        assert np.isfinite(v) and 0.0 <= v <= 1.0
        g = jax.grad(f, argnums=(0, 1))(c, a)
        assert np.isfinite(g).all()
        assert float(g[0]) <= 0.0 <= float(g[1])  # fewer servers or more load: more blocking
    gl = jax.grad(log_erlang_b, argnums=(0, 1))(c, a)
    assert np.isfinite(gl).all() and float(gl[0]) < 0.0 < float(gl[1])
    glc = jax.grad(log_erlang_c, argnums=(0, 1))(c, a)
    assert np.isfinite(glc).all() and float(glc[0]) < 0.0 < float(glc[1])
    # log B is finite even where B underflows (c = 1e6, rho = 0.5: log B ~ -1.9e5)
    assert np.isfinite(float(log_erlang_b(c, a)))


@pytest.mark.parametrize(
    "c, a",
    [(1e6, 1.0), (1e6, 1e-3), (3.0, 1e-300), (0.5, 1e-8), (1e6, 1.5e6), (1e6, 1e9), (2.0, 0.0)],
)
def test_edges_have_finite_gradients(c, a):
    for f in (erlang_b, erlang_c, log_erlang_c):
        v = float(f(c, a))
        assert not np.isnan(v)
        g = jax.grad(f, argnums=(0, 1))(c, a)
        assert not np.isnan(np.array(g)).any(), (f.__name__, g)
    wait = jax.grad(mgc_wait_quantile, argnums=(0, 1))(c, a, 1.0, 1.0)
    assert not np.isnan(np.array(wait)).any()


def test_out_of_domain_values():
    assert float(erlang_b(0.0, 3.0)) == 1.0  # no servers: everything is blocked
    assert float(erlang_b(5.0, 0.0)) == 0.0
    assert float(erlang_c(5.0, 0.0)) == 0.0
    assert float(mgc_wait_quantile(5.0, 0.0, 1.0, 1.0)) == 0.0
    assert np.isnan(float(erlang_b(jnp.nan, 3.0))) and np.isnan(float(erlang_b(3.0, jnp.nan)))


FD_POINTS = [
    (0.7, 0.4),
    (5.5, 3.2),
    (3.0, 40.0),  # Gauss-Laguerre branch
    (20.0, 35.0),  # Gauss-Laguerre branch
    (50.3, 45.0),
    (1000.0, 990.0),
    (1000.0, 1050.0),  # continued fraction inside gammaincc
    (1e4, 9000.0),
]


@pytest.mark.parametrize("c, a", FD_POINTS)
def test_gradients_match_central_differences(c, a):
    for f in (erlang_b, erlang_c, log_erlang_b):
        if f is erlang_c and a >= c:
            continue
        grad = jax.grad(f, argnums=(0, 1))(c, a)
        for i, x in enumerate((c, a)):
            h = 1e-5 * x
            up = (c + h, a) if i == 0 else (c, a + h)
            dn = (c - h, a) if i == 0 else (c, a - h)
            fd = (float(f(*up)) - float(f(*dn))) / (2 * h)
            assert float(grad[i]) == pytest.approx(fd, rel=1e-6), (f.__name__, i)


def test_float32_agrees_with_float64():
    """float32 error is cancellation in the log-prefactor c log a - a - lgamma(c + 1).

    Each term is rounded to ~eps32 of its size and the sum is small, so log B (hence B) carries
    an absolute (relative) error of order eps32 * (1 + c |log a| + a + lgamma(c + 1)); the
    measured worst case is ~3x that, the test allows 8x. B itself underflows float32 where
    log B < -87 (c = 100, a = 10), so logs are compared.
    """
    for c in (0.5, 1.0, 2.0, 5.5, 10.0, 20.0, 50.0, 100.0):
        for rho in (0.1, 0.3, 0.7, 0.9, 0.95, 0.99, 1.0, 1.2, 2.0, 3.0, 10.0):
            a = c * rho
            tol = 8 * EPS32 * (1 + c * abs(math.log(a)) + a + float(sp_gammaln(c + 1)))
            c32, a32 = np.float32(c), np.float32(a)
            lb32 = log_erlang_b(c32, a32)
            assert lb32.dtype == jnp.float32 and erlang_b(c32, a32).dtype == jnp.float32
            assert float(lb32) == pytest.approx(float(log_erlang_b(c, a)), abs=tol)
            if rho < 1:
                lc32 = float(log_erlang_c(c32, a32))
                assert lc32 == pytest.approx(float(log_erlang_c(c, a)), abs=tol)
            assert np.isfinite(jax.grad(log_erlang_b, argnums=(0, 1))(c32, a32)).all()


@settings(max_examples=60, deadline=None)
@given(
    c=st.floats(0.05, 5e4, allow_nan=False),
    rho=st.floats(0.01, 50.0, allow_nan=False),
)
def test_probabilities_are_ordered(c, rho):
    a = c * rho
    b, cc = float(erlang_b(c, a)), float(erlang_c(c, a))
    assert 0.0 <= b <= 1.0 and 0.0 <= cc <= 1.0
    assert cc >= b * (1 - 1e-9)


# ---------------------------------------------------------------- M/G/c wait quantile
def test_wait_quantile_mmc_equals_formula():
    for c, a, s, q in [(2, 1.0, 0.5, 0.99), (10, 8.0, 2.0, 0.95), (100, 90.0, 0.1, 0.999)]:
        ref = wait_quantile_ref(c, a, s, 1.0, q, log_b_recursion(c, a))
        got = float(mgc_wait_quantile(float(c), a, s, 1.0, q))
        assert ref > 0 and got == pytest.approx(ref, rel=1e-10)
        # Kimura's factor (1 + scv)/2: deterministic service halves, scv = 3 doubles
        assert float(mgc_wait_quantile(float(c), a, s, 0.0, q)) == pytest.approx(ref / 2, rel=1e-10)
        assert float(mgc_wait_quantile(float(c), a, s, 3.0, q)) == pytest.approx(2 * ref, rel=1e-10)
    # c = 2, a = 1, mu = 1: C = 1/3, rate c mu - lambda = 1, t_99 = ln(100 / 3)
    assert float(mgc_wait_quantile(2.0, 1.0, 1.0, 1.0)) == pytest.approx(math.log(100 / 3), 1e-13)


def test_wait_quantile_zero_when_waiting_is_rare():
    # C < 1 - q: fewer than 1% of arrivals wait at all, so the 99th percentile wait is 0.
    assert float(erlang_c(50.0, 20.0)) < 0.01
    assert float(mgc_wait_quantile(50.0, 20.0, 1.0, 1.0)) == 0.0


def test_wait_quantile_monotone_in_c_and_infinite_when_saturated():
    a = 40.0
    cs = jnp.linspace(a + 0.05, 80.0, 400)
    w = np.asarray(jax.vmap(lambda c: mgc_wait_quantile(c, a, 1.3, 2.0))(cs))
    assert np.all(np.isfinite(w))
    assert np.all(np.diff(w) <= 0)
    pos = w > 0
    assert np.all(np.diff(w[pos]) < 0)  # strictly while positive
    for c in (40.0, 39.9, 1.0):
        assert float(mgc_wait_quantile(c, a, 1.3, 2.0)) == np.inf
    g = jax.grad(mgc_wait_quantile)(45.0, a, 1.3, 2.0)
    assert np.isfinite(float(g)) and float(g) < 0


# ---------------------------------------------------------------- fleet sizing
Q, MAX_UTIL, SCV = 0.99, 0.85, 1.7


def _feasible_np(c, a, s, slo):
    wait = np.asarray(jax.vmap(mgc_wait_quantile, in_axes=(0, 0, 0, None, None))(c, a, s, SCV, Q))
    return (c >= a / MAX_UTIL) & (wait <= slo)


@pytest.fixture(scope="module")
def triples():
    rng = np.random.default_rng(1234)
    n = 1000
    a = 10 ** rng.uniform(-1, 4, n)  # 0.1 .. 1e4 Erlangs
    s = 10 ** rng.uniform(-2, 1, n)  # 10 ms .. 10 s mean service
    slo = s * 10 ** rng.uniform(-2, 1, n)  # SLO from 1% to 10x the service time
    return a, s, slo


@pytest.fixture(scope="module")
def sized(triples):
    a, s, slo = triples
    axes = (0, 0, None, 0)
    c = jax.jit(jax.vmap(min_servers, in_axes=axes))(a, s, SCV, slo)
    ci = jax.jit(jax.vmap(min_servers_int, in_axes=axes))(a, s, SCV, slo)
    return np.asarray(c), np.asarray(ci)


def test_min_servers_meets_constraints_and_is_minimal(triples, sized):
    a, s, slo = triples
    c, _ = sized
    assert np.all(np.isfinite(c))
    wait = np.asarray(jax.vmap(mgc_wait_quantile, in_axes=(0, 0, 0, None, None))(c, a, s, SCV, Q))
    assert np.all(wait <= slo * (1 + 1e-9))
    assert np.all(a / c <= MAX_UTIL * (1 + 1e-12))
    # one part in 1e7 fewer servers breaks one of the two constraints
    assert not np.any(_feasible_np(c * (1 - 1e-7), a, s, slo))
    # both regimes occur: utilisation-bound (c = a / max_util) and SLO-bound
    util_bound = np.isclose(c, a / MAX_UTIL, rtol=1e-12)
    assert 0 < util_bound.sum() < len(c)


def test_min_servers_int_is_the_ceiling_of_the_relaxation(sized):
    c, ci = sized
    assert np.all(ci == np.ceil(c * (1 - 1e-12)))


def _brute_force_int(a, s, scv, slo, q=Q, max_util=MAX_UTIL):
    """Plain-Python scan of integer c with the Erlang-B recursion (independent of the kernel)."""
    table = log_b_recursion_table(int(a / max_util) + 2000, a)
    for c in range(1, len(table)):
        if c >= a / max_util and c > a:
            if wait_quantile_ref(c, a, s, scv, q, table[c]) <= slo:
                return c
    raise AssertionError("scan range too short")


@pytest.mark.parametrize(
    "a, s, scv, slo",
    [
        (0.5, 1.0, 1.0, 0.05),
        (3.7, 0.2, 0.5, 0.01),
        (42.0, 1.0, 1.0, 0.1),
        (42.0, 1.0, 4.0, 0.02),
        (180.0, 0.05, 1.7, 0.002),
        (900.0, 2.0, 1.0, 5.0),  # utilisation-bound
        (1234.5, 0.3, 2.5, 0.001),
    ],
)
def test_min_servers_int_equals_brute_force(a, s, scv, slo):
    expect = _brute_force_int(a, s, scv, slo)
    assert float(min_servers_int(a, s, scv, slo)) == expect
    c = float(min_servers(a, s, scv, slo))
    assert expect - 1 < c <= expect


def test_min_servers_special_cases():
    assert float(min_servers(0.0, 1.0, 1.0, 0.1)) == 0.0
    assert float(min_servers_int(0.0, 1.0, 1.0, 0.1)) == 0.0
    # slo = 0 is reachable: the P99 wait is exactly 0 once C <= 1 - q (c_max bounds the search)
    c0 = float(min_servers(10.0, 1.0, 1.0, 0.0))
    assert float(erlang_c(c0, 10.0)) == pytest.approx(1 - Q, rel=1e-9)
    assert float(min_servers_int(10.0, 1.0, 1.0, 0.0)) == math.ceil(c0)
    assert float(min_servers(10.0, 1.0, 1.0, -1.0)) == np.inf
    assert float(min_servers_int(10.0, 1.0, 1.0, -1.0)) == np.inf
    assert float(min_servers(100.0, 1.0, 1.0, 0.01, c_max=110.0)) == np.inf  # needs ~160
    assert float(min_servers_int(100.0, 1.0, 1.0, 0.01, c_max=110.0)) == np.inf
    # q = 0: no wait constraint at all, only utilisation
    assert float(min_servers(17.0, 1.0, 1.0, 1e-9, q=0.0)) == pytest.approx(20.0, rel=1e-15)


def test_min_servers_float32():
    a = np.float32([3.0, 42.0, 400.0])
    s = np.float32([0.5, 1.0, 0.2])
    slo = np.float32([0.05, 0.1, 0.01])
    c32 = jax.vmap(min_servers, in_axes=(0, 0, None, 0))(a, s, np.float32(1.0), slo)
    assert c32.dtype == jnp.float32
    c64 = jax.vmap(min_servers, in_axes=(0, 0, None, 0))(a.astype(float), s, 1.0, slo)
    # the wait quantile's slope in c turns float32's ~1e-5 error in log C into ~1e-5 in c
    np.testing.assert_allclose(np.asarray(c32), np.asarray(c64), rtol=1e-4)


def test_min_servers_has_the_implicit_derivative():
    """Autodiff through a bisection is meaningless; min_servers attaches dc from t_q(c) = slo."""
    cases = np.array([(5.0, 30.0, 1.0, 1.0), (50.0, 10.0, 0.5, 0.2), (3000.0, 20.0, 1.5, 2.0)])
    grad = jax.jit(jax.vmap(jax.grad(lambda x: min_servers(*x))))
    relaxed = jax.jit(jax.vmap(lambda x: min_servers(*x)))
    plain = jax.jit(jax.vmap(lambda x: _bisect_min_servers(*x, 0.99, 0.85, 1e7, 64)))
    assert np.array_equal(relaxed(cases), plain(cases))
    step = 1e-6 * cases
    eye = np.eye(4)
    up = (cases[:, None, :] + eye * step[:, None, :]).reshape(-1, 4)
    dn = (cases[:, None, :] - eye * step[:, None, :]).reshape(-1, 4)
    fd = (np.asarray(plain(up)) - np.asarray(plain(dn))).reshape(3, 4) / (2 * step)
    got = np.asarray(grad(cases))
    assert np.allclose(got, fd, rtol=1e-5, atol=1e-8), (got, fd)
    # the bisection's own autodiff derivative is not the derivative (why the wrapper exists)
    naive = jax.vmap(jax.jacfwd(lambda x: _bisect_min_servers(*x, 0.99, 0.85, 1e7, 64)))
    naive = np.asarray(jax.jit(naive)(cases))
    assert not np.allclose(naive, fd, rtol=1e-3)

"""Queueing kernels for fleet sizing: Erlang B/C for real server counts, Kimura's M/G/c wait.

Pure functions of one point (scalars in, scalars out; arrays broadcast elementwise), in the
floating dtype of their inputs (float32 or float64), free of Python branches on values, so
they jit, vmap and differentiate in the server count c and the offered load a.

Units: a = lambda / mu is the offered load in Erlangs (arrival rate x mean service time);
c is the number of servers (here: GPUs x concurrency slots), real-valued; times in seconds.

Numerics (see the docstring of `log_erlang_b`): Erlang B is computed in logs from the upper
regularised incomplete gamma function, except far above saturation (a - c >= 3 max(sqrt c, 1)),
the only region where Q(c + 1, a) can underflow, which uses a Gauss-Laguerre form of Jagerman's
integral instead.
float32 loses about eps32 * (c |log a| + a + lgamma(c + 1)) relative accuracy below that
threshold (cancellation in the Poisson log-prefactor); use float64 for c beyond ~1e3.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaincc, gammaln

# Gauss-Laguerre rule for int_0^inf e^-v f(v) dv (Abramowitz & Stegun 25.4.45); 32 nodes give
# float64 round-off for a - c >= 3 max(sqrt c, 1), where the rule is used.
_GL_X, _GL_W = np.polynomial.laguerre.laggauss(32)
_GL_Z = 3.0


def _float_dtype(*xs):
    """The floating dtype the inputs promote to (Python scalars take the default float)."""
    return jnp.result_type(*xs, float)


def _log_b_incomplete_gamma(c, a):
    """log B = c log a - a - lgamma(c + 1) - log Q(c + 1, a); valid where Q does not underflow."""
    return c * jnp.log(a) - a - gammaln(c + 1.0) - jnp.log(gammaincc(c + 1.0, a))


def _log_b_laguerre(c, a):
    """log B from Jagerman's integral 1/B = a int_0^inf e^{-a t} (1 + t)^c dt, for a > c.

    Substituting a t = v / kappa with kappa = 1 - c/a turns it into
        1/B = (1/kappa) int_0^inf e^{-v} exp(-c g(v / (a - c))) dv,  g(x) = x - log(1 + x) >= 0,
    whose integrand factor is smooth and in (0, 1], so a fixed Gauss-Laguerre rule is exact to
    round-off when a - c >= 3 max(sqrt c, 1); as a / c -> inf it gives B -> 1 - c/a.
    """
    d = a - c
    x = jnp.asarray(_GL_X, d.dtype)
    w = jnp.asarray(_GL_W, d.dtype)
    t = x / jnp.expand_dims(d, -1)
    integral = jnp.sum(w * jnp.exp(-jnp.expand_dims(c, -1) * (t - jnp.log1p(t))), axis=-1)
    return jnp.log(d) - jnp.log(a) - jnp.log(integral)


def log_erlang_b(c, a):
    """Natural log of the Erlang-B blocking probability for real c > 0 servers, load a Erlangs.

        B(c, a) = poisson_pmf(c; a) / Q(c + 1, a) = a^c e^{-a} / Gamma(c + 1, a)
        log B   = c log a - a - lgamma(c + 1) - log Q(c + 1, a)

    Q is the upper regularised incomplete gamma function (`gammaincc`); for integer c this is
    the Erlang loss formula (a^c / c!) / sum_{k<=c} a^k / k!, and for real c Jagerman's
    continuous extension (D. L. Jagerman, "Some properties of the Erlang loss function",
    Bell System Technical Journal 53(3), 1974, 525-551).

    Regimes: for a << c, Q -> 1 and B underflows harmlessly (log B stays finite). For a >> c,
    Q(c + 1, a) ~ e^{-a} a^c underflows (float64: from about c = 1e4, a = 1.5c; c = 1, a = 710)
    and log B becomes inf - inf; there, for a - c >= 3 max(sqrt c, 1), the Gauss-Laguerre form
    of `_log_b_laguerre` is used instead (it needs no incomplete gamma at all). Both branches
    see safe arguments wherever they are not selected (double `jnp.where`), so no NaN reaches
    the gradients. Edges: c <= 0 gives log B = 0 (B = 1); a <= 0 gives -inf (B = 0).
    """
    dt = _float_dtype(c, a)
    c = jnp.asarray(c, dt)
    a = jnp.asarray(a, dt)
    no_servers = c <= 0
    no_load = a <= 0
    c = jnp.where(no_servers, 1.0, c)
    a = jnp.where(no_load, 1.0, a)
    margin = _GL_Z * jnp.maximum(jnp.sqrt(c), 1.0)
    far = a - c >= margin
    log_b = jnp.where(
        far,
        _log_b_laguerre(c, jnp.where(far, a, c + 2.0 * margin)),
        _log_b_incomplete_gamma(c, jnp.where(far, 0.5 * c, a)),
    )
    log_b = jnp.where(no_load, -jnp.inf, log_b)
    return jnp.where(no_servers, 0.0, log_b)


def erlang_b(c, a):
    """Erlang-B blocking probability B(c, a) in [0, 1] (M/M/c/c); see `log_erlang_b`.

    c: servers (real, > 0); a = lambda / mu: offered load in Erlangs. Dimensionless.
    """
    return jnp.exp(log_erlang_b(c, a))


def log_erlang_c(c, a):
    """Natural log of the Erlang-C probability of waiting; 0 (C = 1) when a >= c.

        C = c B / (c - a (1 - B)) = B / (1 - rho (1 - B)),  rho = a / c,  for a < c,
    computed as log C = log B - log((1 - rho) + rho B) so that C underflows gracefully.
    (L. Kleinrock, Queueing Systems Vol. 1, Wiley 1975, eq. 3.40, with B from `log_erlang_b`.)
    """
    dt = _float_dtype(c, a)
    c = jnp.asarray(c, dt)
    a = jnp.asarray(a, dt)
    saturated = a >= c
    c = jnp.where(saturated, 1.0, c)
    a = jnp.where(saturated, 0.5, a)
    rho = a / c
    log_b = log_erlang_b(c, a)
    log_c = log_b - jnp.log((c - a) / c + rho * jnp.exp(log_b))
    return jnp.where(saturated, 0.0, log_c)


def erlang_c(c, a):
    """Erlang-C probability that an arrival waits in M/M/c, C(c, a) in [0, 1].

        C = c B / (c - a (1 - B))  for a < c;  C = 1 for a >= c (saturated: the queue grows
        without bound, every arrival waits).

    c: servers (real, > 0); a: offered load in Erlangs. Dimensionless.
    """
    return jnp.exp(log_erlang_c(c, a))


def mgc_wait_quantile(c, a, service_mean_s, service_scv, q=0.99):
    """q-quantile of the M/G/c queueing wait (seconds), Kimura's two-moment approximation.

    M/M/c: P(W > t) = C exp(-(c mu - lambda) t) with mu = 1 / service_mean_s, lambda = a mu, so
        t_q(M/M/c) = max(0, ln(C / (1 - q))) / (c mu - lambda)
                   = max(0, ln C - ln(1 - q)) * service_mean_s / (c - a).
    M/G/c: t_q = (1 + scv) / 2 * t_q(M/M/c), scv = Var[S] / E[S]^2 of the service time S.
    Kimura derived the (1 + scv)/2 factor for the mean wait (T. Kimura, "A two-moment
    approximation for the mean waiting time in the GI/G/s queue", Management Science 32(6),
    1986, 751-763, with Poisson arrivals); applying it to the quantile is the usual engineering
    extension. Returns +inf when a >= c (saturated). c: servers; a: Erlangs; q in [0, 1).
    """
    dt = _float_dtype(c, a, service_mean_s, service_scv, q)
    c, a, s, scv, q = (jnp.asarray(x, dt) for x in (c, a, service_mean_s, service_scv, q))
    saturated = a >= c
    c = jnp.where(saturated, 1.0, c)
    a = jnp.where(saturated, 0.5, a)
    log_tail = jnp.maximum(0.0, log_erlang_c(c, a) - jnp.log1p(-q))
    wait = 0.5 * (1.0 + scv) * log_tail * s / (c - a)
    return jnp.where(saturated, jnp.inf, wait)


def _feasible(c, a, service_mean_s, service_scv, slo_s, q, max_util):
    """Both sizing constraints: c >= a / max_util (utilisation) and q-quantile wait <= slo_s.

    The utilisation test is written as c >= a / max_util so that c = a / max_util passes exactly.
    """
    wait = mgc_wait_quantile(c, a, service_mean_s, service_scv, q)
    return (c >= a / max_util) & (wait <= slo_s)


def _always_feasible_c(a, service_mean_s, service_scv, slo_s, q, max_util):
    """A server count that meets both constraints (+inf when slo_s <= 0: then c_max bounds).

    Since C <= 1, t_q <= (1 + scv)/2 * (-ln(1 - q)) * service_mean_s / (c - a); doubling the
    excess over a gives t_q <= slo_s / 2 with margin for round-off.
    """
    slo_ok = slo_s > 0
    excess = (1.0 + service_scv) * -jnp.log1p(-q) * service_mean_s / jnp.where(slo_ok, slo_s, 1.0)
    return jnp.where(slo_ok, jnp.maximum(a / max_util, a + excess), jnp.inf)


def _as_dtype(a, service_mean_s, service_scv, slo_s, q, max_util, c_max):
    dt = _float_dtype(a, service_mean_s, service_scv, slo_s, q, max_util, c_max)
    return [jnp.asarray(x, dt) for x in (a, service_mean_s, service_scv, slo_s, q, max_util, c_max)]


def _bisect_min_servers(a, service_mean_s, service_scv, slo_s, q, max_util, c_max, iters):
    """Smallest real server count c (continuous relaxation) meeting the sizing constraints.

        c* = min { c : t_q(c) <= slo_s  and  a / c <= max_util },  t_q = `mgc_wait_quantile`

    Bisection, `iters` halvings (a static int) of [a / max_util, c_hi], c_hi from
    `_always_feasible_c` capped at c_max; returns the upper end, which is always feasible, so
    the result is within (c_hi - a/max_util) / 2^iters above c*. t_q decreases in c, so the
    feasible set is [c*, inf). Returns a / max_util when that already meets the SLO, +inf when
    c_max does not (always so for slo_s < 0; slo_s = 0 is met once C <= 1 - q), 0 when a <= 0.
    a: Erlangs; times in seconds.
    """
    a, s, scv, slo, q, max_util, c_max = _as_dtype(
        a, service_mean_s, service_scv, slo_s, q, max_util, c_max
    )
    no_load = a <= 0
    a = jnp.where(no_load, 1.0, a)

    def feasible(c):
        return _feasible(c, a, s, scv, slo, q, max_util)

    lo = a / max_util
    hi = jnp.minimum(_always_feasible_c(a, s, scv, slo, q, max_util), c_max)

    def halve(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        ok = feasible(mid)
        return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

    _, c = jax.lax.fori_loop(jnp.int32(0), jnp.int32(iters), halve, (lo, hi))
    c = jnp.where(feasible(lo), lo, c)
    c = jnp.where(feasible(hi), c, jnp.inf)
    return jnp.where(no_load, 0.0, c)


def min_servers(a, service_mean_s, service_scv, slo_s, q=0.99, max_util=0.85, c_max=1e7, iters=64):
    """Smallest real server count (continuous relaxation), with its implicit-function derivative.

    Value: the bisection `_bisect_min_servers` (within its tolerance of the exact c*).
    Derivative: where the utilisation bound binds (``c = a / max_util`` meets the SLO) that of
    ``a / max_util``; elsewhere the SLO binds,
    ``t_q(c) = slo``, and ``dc = -(dt_q/da da + dt_q/ds ds + dt_q/dscv dscv - dslo) / (dt_q/dc)``.
    Built as ``c0 + h - stop_gradient(h)`` so no derivative flows through the bisection or
    through the inner ``dt_q/dc`` (whose own derivative would need second derivatives of the
    incomplete gamma function, which JAX does not implement). Infinite (unreachable) values
    keep a zero derivative.
    """
    sg = jax.lax.stop_gradient
    dt = jnp.result_type(a, service_mean_s, service_scv, slo_s, q, max_util, float)
    a, s, scv, slo, q, max_util = (
        jnp.asarray(x, dt) for x in (a, service_mean_s, service_scv, slo_s, q, max_util)
    )
    c0 = sg(_bisect_min_servers(a, s, scv, slo, q, max_util, c_max, iters))
    lo = a / max_util
    util_bound = sg(c0 <= lo)
    finite = jnp.isfinite(c0) & (c0 > 0)
    c_safe = jnp.where(finite, c0, 1.0) + jnp.where(finite, 0.0, sg(a) + 1.0)

    def wait(c, a_, s_, scv_):
        return mgc_wait_quantile(c, a_, s_, scv_, q)

    slope = sg(jax.grad(wait)(sg(c_safe), sg(a), sg(s), sg(scv)))
    slope_ok = jnp.isfinite(slope) & (slope < 0)
    h = -(wait(c_safe, a, s, scv) - slo) / jnp.where(slope_ok, slope, -1.0)
    h = jnp.where(slope_ok & ~util_bound & finite, h, 0.0)
    c_slo = c0 + (h - sg(h))
    c_util = c0 + (lo - sg(lo))
    return jnp.where(util_bound, c_util, jnp.where(finite, c_slo, c0))


def min_servers_int(
    a, service_mean_s, service_scv, slo_s, q=0.99, max_util=0.85, c_max=1e7, iters=48
):
    """Smallest integer server count meeting the sizing constraints (see `min_servers`).

    Bisection over integers held in floats: lo = floor(a / max_util) - 1 (clipped at 0) is
    infeasible, hi = ceil(c_hi) (capped at floor(c_max)) feasible; each step tests
    mid = floor((lo + hi) / 2) until hi = lo + 1. Exact when 2^iters >= hi - lo (default 48:
    any c below 2.8e14). Returns an integer-valued float; +inf when floor(c_max) servers do
    not meet the constraints, 0 when a <= 0.
    """
    a, s, scv, slo, q, max_util, c_max = _as_dtype(
        a, service_mean_s, service_scv, slo_s, q, max_util, c_max
    )
    no_load = a <= 0
    a = jnp.where(no_load, 1.0, a)

    def feasible(c):
        return _feasible(c, a, s, scv, slo, q, max_util)

    lo = jnp.maximum(jnp.floor(a / max_util) - 1.0, 0.0)
    hi = jnp.minimum(jnp.ceil(_always_feasible_c(a, s, scv, slo, q, max_util)), jnp.floor(c_max))
    hi = jnp.maximum(hi, lo + 1.0)

    def halve(_, bounds):
        lo, hi = bounds
        active = hi - lo > 1.0
        mid = jnp.floor(0.5 * (lo + hi))
        ok = feasible(mid)
        return jnp.where(active & ~ok, mid, lo), jnp.where(active & ok, mid, hi)

    _, c = jax.lax.fori_loop(jnp.int32(0), jnp.int32(iters), halve, (lo, hi))
    c = jnp.where(feasible(c), c, jnp.inf)
    return jnp.where(no_load, 0.0, c)

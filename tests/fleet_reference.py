"""Slow, obvious, plain-Python reference of the fleet model (kernels/fleet.py's docstring).

One design point in, one dict out, with the ``math`` module only: the per-GPU physics from
``tests.reference_model`` (itself written from MODEL.md sections 1 and 2), pool statistics by
looping over the segments of the piecewise-linear CDF, Erlang B by its recursion
B(0) = 1, B(k) = a B(k-1) / (k + a B(k-1)) (in logs), Kimura's M/G/c quantile, and integer
sizing by trying replica counts one by one. Nothing vectorised, nothing shared with the JAX
code beyond the model's definition.
"""

from __future__ import annotations

import math

from tests.reference_model import calibrated, param_counts, roofline

NAN = float("nan")


# ---------------------------------------------------------------------------- the workload
def cdf_at(tokens, cdf, x):
    if x <= tokens[0]:
        return 0.0
    if x >= tokens[-1]:
        return 1.0
    for i in range(len(tokens) - 1):
        if tokens[i] <= x <= tokens[i + 1]:
            frac = (x - tokens[i]) / (tokens[i + 1] - tokens[i])
            return cdf[i] + frac * (cdf[i + 1] - cdf[i])
    raise AssertionError(x)


def moments(tokens, cdf, lo, hi):
    """(mass, int L dF, int L^2 dF) over (lo, hi]: uniform density on every segment."""
    mass = first = second = 0.0
    for i in range(len(tokens) - 1):
        t0, t1 = tokens[i], tokens[i + 1]
        a, b = max(lo, t0), min(hi, t1)
        if b <= a:
            continue
        d = (cdf[i + 1] - cdf[i]) / (t1 - t0)
        mass += d * (b - a)
        first += d * (b * b - a * a) / 2
        second += d * (b**3 - a**3) / 3
    return mass, first, second


def quantile_length(tokens, cdf, lo, hi, q):
    """The smallest L with F(L) >= F(lo) + q (F(hi) - F(lo))."""
    f_lo, f_hi = cdf_at(tokens, cdf, lo), cdf_at(tokens, cdf, hi)
    target = f_lo + q * (f_hi - f_lo)
    for i in range(len(tokens) - 1):
        if cdf[i + 1] >= target and cdf[i + 1] > cdf[i]:
            frac = (target - cdf[i]) / (cdf[i + 1] - cdf[i])
            return tokens[i] + max(frac, 0.0) * (tokens[i + 1] - tokens[i])
    return tokens[-1]


# ---------------------------------------------------------------------------- queueing
class ErlangB:
    """log B(k, a) for integer k by the recursion, extended on demand."""

    def __init__(self, a):
        self.a = a
        self.log_b = [0.0]

    def __call__(self, c: int) -> float:
        a = self.a
        while len(self.log_b) <= c:
            k = len(self.log_b)
            prev = self.log_b[-1]
            self.log_b.append(math.log(a) + prev - math.log(k + a * math.exp(prev)))
        return self.log_b[c]


def wait_quantile(c, a, service_mean, scv, q, log_b):
    """Kimura: (1 + scv)/2 * max(0, ln(C / (1 - q))) * E[S] / (c - a); inf when a >= c."""
    if a >= c:
        return math.inf
    b = math.exp(log_b)
    log_c = log_b - math.log((c - a) / c + a / c * b)
    return 0.5 * (1 + scv) * max(0.0, log_c - math.log(1 - q)) * service_mean / (c - a)


def feasible(c, a, service_mean, scv, slo, q, max_util, erlang):
    if c < a / max_util:
        return False
    return wait_quantile(c, a, service_mean, scv, q, erlang(c)) <= slo


def min_replicas(slots: int, a, service_mean, scv, slo, q, max_util) -> int:
    """The least integer replica count r with r * slots servers meeting both constraints."""
    erlang = ErlangB(a)
    r = max(1, math.floor(a / (max_util * slots)))
    while not feasible(r * slots, a, service_mean, scv, slo, q, max_util, erlang):
        r += 1
    return r


# ---------------------------------------------------------------------------- one pool
def roofline_gpu(p: dict):
    """(window, batch) -> dict for a roofline pool; p as tests.reference_model.roofline takes."""

    def run(window, batch):
        out = roofline({**p, "context": window, "batch": batch})
        active = param_counts(p)["active"]
        out["prefill_s_per_token"] = 2 * active / (p["flops"] * p["flops_eff"] * p["tp"])
        out["gpus_per_replica"] = p["tp"]
        out["slots"] = out["b_max"]
        return out

    return run


def calibrated_gpu(p: dict):
    """(window, batch) -> dict for a calibrated pool (one replica = one GPU)."""

    def run(window, batch):
        out = calibrated({**p, "context": window, "batch": batch})
        chunk = p["prefill_chunk"]
        out["prefill_s_per_token"] = p["w_s"] / chunk if chunk > 0 else 0.0
        out["gpus_per_replica"] = 1
        out["slots"] = out["concurrency"] if batch == 0 else NAN
        return out

    return run


def pool(gpu, window, lo, hi, rate, wl, slo, q, max_util) -> dict:
    tokens, cdf, share = wl
    mass, first, second = moments(tokens, cdf, lo, hi)
    if mass <= 0:
        return {"mass": 0.0, "gpus": 0, "watts": 0.0, "feasible": True, "p99_ttft": NAN}
    sat = gpu(window, 0)
    if not sat["feasible"]:
        return {"mass": mass, "feasible": False}
    slots = int(sat["slots"])
    mean = first / mass
    scv = second * mass / first**2 - 1
    t_pf = sat["prefill_s_per_token"]
    service = (share * sat["iter_time"] + (1 - share) * t_pf) * mean
    a = rate * mass * service
    r = min_replicas(slots, a, service, scv, slo, q, max_util)
    c = r * slots
    n = a / r
    power = gpu(window, n)["power"]
    gpus = r * sat["gpus_per_replica"]
    wait = wait_quantile(c, a, service, scv, q, ErlangB(a)(c))
    l_q = quantile_length(tokens, cdf, lo, hi, q)
    return {
        "mass": mass,
        "slots": slots,
        "service_time": service,
        "scv": scv,
        "load": a,
        "replicas": r,
        "servers": c,
        "gpus": gpus,
        "concurrency": n,
        "util": a / c,
        "power": power,
        "watts": gpus * power,
        "p99_wait": wait,
        "p99_ttft": wait + t_pf * (1 - share) * l_q,
        "feasible": True,
    }


# ---------------------------------------------------------------------------- the fleet
def fleet(short_gpu, long_gpu, b_short, w_long, rate, wl, slo, q=0.99, max_util=0.85) -> dict:
    """Two-pool and homogeneous fleets of one point; wl = (tokens, cdf, output_share)."""
    tokens, cdf, share = wl
    if b_short > w_long:
        return {"feasible": False}
    short = pool(short_gpu, b_short, 0.0, b_short, rate, wl, slo, q, max_util)
    long = pool(long_gpu, w_long, b_short, w_long, rate, wl, slo, q, max_util)
    homog = pool(long_gpu, w_long, 0.0, w_long, rate, wl, slo, q, max_util)
    accepted, first, _ = moments(tokens, cdf, 0.0, w_long)
    out_rate = rate * share * first
    ok = short["feasible"] and long["feasible"] and homog["feasible"]
    if not ok:
        return {"feasible": False}
    two = short["watts"] + long["watts"]
    return {
        "feasible": True,
        "fleet_tok_per_watt": out_rate / two,
        "homogeneous_tok_per_watt": out_rate / homog["watts"],
        "gain": homog["watts"] / two,
        "gpus_short": short["gpus"],
        "gpus_long": long["gpus"],
        "gpus_homogeneous": homog["gpus"],
        "p99_ttft_short": short["p99_ttft"],
        "p99_ttft_long": long["p99_ttft"],
        "share_short": short["mass"] / accepted,
        "rejected_share": 1 - accepted,
        "output_rate": out_rate,
        "pools": {"short": short, "long": long, "homogeneous": homog},
    }

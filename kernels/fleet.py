"""Fleet topology: context-length routing (FleetOpt, arXiv 2603.16514; MODEL.md section 4).

Pure JAX, one fleet design point in, scalars out: it jits, vmaps over a grid (``sweep.fleet``
maps it with the generic engine) and, in the relaxed form, differentiates. This docstring is the
specification users read; every modelling choice is stated here.

The workload
------------
Requests arrive as a Poisson stream of ``arrival_rate`` requests/s. A request's length
``L = prompt + output`` tokens follows the workload's piecewise-linear CDF
(``sweep.workload``); ``output = s L`` and ``prompt = (1 - s) L`` with ``s`` the workload's
``output_share``. Pools serve length intervals ``(lo, hi]``; ``kernels.lengths.pool_stats``
gives each pool's share of the requests, ``E[L | pool]`` and ``Var[L | pool] / E[L | pool]^2``.

Requests longer than ``w_long`` fit in no window of either fleet. **They are rejected, not
truncated**: neither fleet serves them, both fleets serve the same accepted traffic
``L <= w_long``, and ``rejected_share = 1 - F(w_long)`` is reported (so a comparison is never
flattered by dropping work from one side only). Truncating the CDF would silently change the
workload the user gave.

Fleets
------
* homogeneous: one pool at window ``W = w_long`` on ``gpu_long`` serving ``(0, w_long]``;
* two-pool: a short pool at ``W = b_short`` on ``gpu_short`` serving ``(0, b_short]`` and a
  long pool at ``W = w_long`` on ``gpu_long`` serving ``(b_short, w_long]``.

``b_short > w_long`` is not a two-pool fleet: such points are infeasible (NaN). At
``b_short == w_long`` the long pool is empty and, with ``gpu_short == gpu_long``, the two-pool
fleet is the homogeneous one: ``gain == 1`` exactly. The homogeneous fleet runs on
``gpu_long``, so on the diagonal ``gpu_short == gpu_long`` ``gain`` is the routing gain alone.

One pool: an M/G/c queue of KV slots
------------------------------------
A *replica* is ``tp`` GPUs (roofline pools; ``tp`` from the grid) holding one model copy. A
calibrated profile's throughput ``n / t_iter`` and power ``P(n)`` describe one unit of the
profile (MODEL.md section 1, as ``sweep run`` reads them), so a calibrated replica counts as
**one GPU** (the profile's own ``tp`` is not applied; multiply the GPU counts by it for
physical GPUs, which divides tok/W by it too).

1. Slots. At the pool's window ``W`` the per-GPU kernel (``kernels.roofline.roofline_point``
   or ``kernels.calibrated.calibrated_point``) at the saturated batch gives the concurrency
   limit ``slots = B_max(W)`` per replica and the iteration time ``t_iter = t_iter(B_max)``.
   A request holds one slot from the start of its prefill to its last output token; a slot
   reserves ``W`` tokens of KV whatever the request's length (the 1/W model's reservation).
2. Service time of one slot, linear in the request length:

       S(L) = s L t_iter + (1 - s) L t_pf,      E[S] = k E[L | pool],  k = s t_iter + (1 - s) t_pf

   *Decode*: one token per iteration at the **saturated** iteration time -- conservative (a
   pool run below saturation iterates faster) and free of a fixed point between the operating
   batch and the sizing. *Prefill*, compute-bound, ``t_pf`` seconds per prompt token:
   roofline ``t_pf = 2 active / (flops flops_eff tp)`` (the attention term of prefill, which
   grows as the prompt squared, is not modelled: it adds about 60% at a 64K prompt on
   Llama-3.1-70B); calibrated profiles carry no FLOP figures, so a prompt is folded in as
   chunks of ``prefill_chunk`` tokens, each costing the base iteration time: ``t_pf = W_s /
   prefill_chunk`` (pro rata for a partial chunk; ``prefill_chunk = 0`` neglects prefill).
   Prefill interference with the decode of other sequences is not modelled (as in MODEL.md).
   SCV: ``S`` is proportional to ``L``, so ``Var[S] / E[S]^2 = pool_stats.scv`` exactly.
3. Offered load ``a = lambda_i E[S]`` Erlangs, ``lambda_i = arrival_rate x mass_i``;
   ``c = replicas x slots`` servers.
4. Sizing: the fewest replicas whose ``c`` meets both ``a / c <= max_util`` (0.85) and
   ``t_q(c) <= slo`` with ``t_q`` the ``quantile`` (0.99) queueing wait of Kimura's M/G/c
   approximation (``kernels.queueing.mgc_wait_quantile``). The **SLO bounds the P99 queueing
   wait** (MODEL.md section 4); the prefill is added only to the reported TTFT below, which can
   therefore exceed ``slo`` (long prompts on a compute-bound prefill always do).
   Integers (reported sizes): ``c_int = min_servers_int(...)``, the least integer server count;
   feasibility is monotone in c, so ``replicas = ceil(c_int / slots)`` is the least replica
   count (``replicas - 1`` fails a constraint). Relaxed (gradients): ``c = min_servers(...)``
   with ``slots`` continuous (floor/ceil dropped in the kernels) and ``replicas = c / slots``.
   autodiff through a bisection would be meaningless, so
   :func:`kernels.queueing.min_servers` attaches the implicit-function derivative instead:
   ``dc = d(a / max_util)`` where the utilisation bound binds, else
   ``dc = -(dt_q - dslo) / (dt_q / dc)`` holding ``t_q(c) = slo``.
5. ``gpus = replicas x tp``; busy slots (Little's law) ``a``; mean sequences in flight per
   replica ``n = a / replicas`` (``<= max_util x slots``); power per GPU ``P(n)``: the per-GPU
   kernel evaluated at batch ``n`` (the logistic curve, or the activity curve at that batch).
   The pool's energy rate is ``gpus x P(n)`` watts.
6. Reported TTFT: ``p99_ttft = t_q(c) + t_pf (1 - s) L_q`` with ``L_q`` the pool's
   ``quantile`` request length: the sum of the two quantiles (exact if the longest prompts were
   also the ones that waited longest; an engineering estimate, not a convolution).

Fleet outputs
-------------
    out_rate              = arrival_rate s E[L; L <= w_long]           output tokens/s (both fleets)
    fleet_tok_per_watt    = out_rate / (gpus_s P_s(n_s) + gpus_l P_l(n_l))                 [J-1]
    homogeneous_tok_per_watt = out_rate / (gpus_h P_h(n_h))
    gain                  = fleet / homogeneous = homogeneous watts / two-pool watts
    cost_per_mtok         = (sum_i gpus_i price_i / 3600) / out_rate x 1e6   [USD per 1e6 output]

Consequences worth knowing when reading results: every non-empty pool has at least one replica
(``tp`` GPUs), so at low arrival rates a two-pool fleet pays for two partly idle replicas where
the homogeneous fleet needs one (gains below 1 are real results there, not bugs); and idle-ish
GPUs draw less power on the logistic curve, so a homogeneous fleet of long-window GPUs running
few sequences each draws less per GPU than a busy short pool (the tok/W gain is smaller than
the GPU-count gain). Roofline tok/W counts all ``tp`` GPUs of a replica; a calibrated replica
is one GPU, so absolute calibrated tok/W are ``tp`` times larger for the same deployment
(ratios such as ``gain`` are unaffected).

An empty pool (no requests in its interval) has 0 GPUs and no TTFT (NaN). A point is infeasible
(NaN, ``feasible`` false) where ``b_short > w_long``, or a non-empty pool's kernel is infeasible
(weights do not fit, dtype unsupported, window beyond the model's max_position, B_max < 1), or
no server count up to ``c_max`` (1e7) meets the SLO.

Inputs (``fleet_point``'s mapping ``p``): ``b_short``, ``w_long`` (tokens), ``arrival_rate``
(1/s), ``slo`` (s), ``quantile``, ``max_util``, the workload ``wl_tokens``, ``wl_cdf`` (1-D
arrays of equal length, see ``Workload.padded``) and ``wl_output_share``, ``short_price`` and
``long_price`` (USD per GPU-hour, NaN when unknown), every input of the per-GPU kernel shared by
both pools (model fields, ``fill``, ``tp``, ...), and the GPU inputs of each pool prefixed
``short_`` and ``long_`` (``short_mem_bw``, ``long_w_s``, ...).
"""

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from kernels.calibrated import calibrated_point

# The workload's array helpers (pure jax.numpy) live beside the Workload container.
from kernels.lengths import cdf_at, partial_moments, pool_stats
from kernels.queueing import mgc_wait_quantile, min_servers, min_servers_int
from kernels.roofline import roofline_point

C_MAX = 1e7  # most servers (slots) a pool may have; beyond: infeasible

GpuKernel = Callable[..., dict]


# --------------------------------------------------------------------------------------------
# Per-GPU kernels of a pool: (window, batch) -> slots, iteration time, power, prefill cost


def roofline_gpu(p: Mapping, expert_coverage: str = "independent", power: str = "logistic"):
    """A pool's GPU in roofline mode: ``run(window, batch, relaxed) -> dict``.

    ``p``: the roofline kernel's inputs without ``context`` and ``batch``. The dict holds
    ``slots`` (B_max per replica), ``iter_time`` (s), ``power`` (W per GPU, at ``batch``;
    batch 0 = saturated), ``feasible``, ``prefill_s_per_token`` (``2 active / (flops
    flops_eff tp)``, s) and ``gpus_per_replica`` (``tp``).
    """

    def run(window, batch, relaxed):
        q = dict(p, context=window, batch=batch)
        out = roofline_point(q, expert_coverage=expert_coverage, power=power, relaxed=relaxed)
        peak = jnp.where(p["flops"] > 0, p["flops"], 1.0)
        prefill = 2.0 * out["active_param_count"] / (peak * p["flops_eff"] * p["tp"])
        return {
            "slots": out["concurrency_limit"],
            "iter_time": out["iter_time"],
            "power": out["power"],
            "feasible": out["feasible"],
            "prefill_s_per_token": prefill,
            "gpus_per_replica": p["tp"],
        }

    return run


def calibrated_gpu(p: Mapping):
    """A pool's GPU from a calibrated profile: ``run(window, batch, relaxed) -> dict``.

    ``p``: the calibrated kernel's inputs without ``context``/``batch``, plus
    ``prefill_chunk`` (tokens per base iteration W_s; 0 neglects prefill). One replica is one
    GPU (see the module docstring).
    """

    def run(window, batch, relaxed):
        out = calibrated_point(dict(p, context=window, batch=batch), relaxed=relaxed)
        chunk = p["prefill_chunk"]
        prefill = jnp.where(chunk > 0, p["w_s"] / jnp.where(chunk > 0, chunk, 1.0), 0.0)
        return {
            "slots": out["concurrency_limit"],
            "iter_time": out["iter_time"],
            "power": out["power"],
            "feasible": out["feasible"],
            "prefill_s_per_token": prefill,
            "gpus_per_replica": jnp.ones_like(window),
        }

    return run


# --------------------------------------------------------------------------------------------
# Sizing


def pool_quantile_length(tokens, cdf, lo, hi, q):
    """The q-quantile of L among the requests in ``(lo, hi]`` (tokens), by inverting the CDF."""
    f_lo = cdf_at(tokens, cdf, lo)
    f_hi = cdf_at(tokens, cdf, hi)
    target = f_lo + q * (f_hi - f_lo)
    return jnp.interp(target, jnp.asarray(cdf), jnp.asarray(tokens))


def serve_pool(
    gpu: GpuKernel,
    window,
    lo,
    hi,
    rate,
    tokens,
    cdf,
    share,
    slo,
    q,
    max_util,
    relaxed: bool = False,
) -> dict:
    """Size one pool serving lengths ``(lo, hi]`` at ``window`` on ``gpu``; see the module doc.

    Returns ``mass`` (share of all requests), ``slots`` (per replica), ``iter_time``,
    ``service_time`` (E[S], s), ``scv``, ``load`` (Erlangs), ``servers``, ``replicas``, ``gpus``,
    ``concurrency`` (sequences in flight per replica), ``util``, ``p99_wait`` and ``p99_ttft``
    (s, at the ``quantile`` q), ``power`` (W per GPU), ``watts`` (the pool's draw) and
    ``feasible``. An empty pool has 0 replicas, gpus and watts, NaN per-request figures, and is
    feasible.
    """
    stats = pool_stats(tokens, cdf, share, lo, hi)
    has = stats.mass > 0
    sat = gpu(window, jnp.zeros_like(window), relaxed)
    slots = sat["slots"]
    kernel_ok = sat["feasible"] & jnp.isfinite(sat["iter_time"]) & (slots > 0)
    if not relaxed:
        kernel_ok = kernel_ok & (slots >= 1)
    ok = has & kernel_ok
    slots_s = jnp.where(ok, slots, 1.0)
    t_iter = jnp.where(ok, sat["iter_time"], 1.0)
    t_pf = sat["prefill_s_per_token"]
    mean_len = jnp.where(ok, stats.mean_tokens, 1.0)
    scv = jnp.where(ok, stats.scv, 0.0)
    k = share * t_iter + (1.0 - share) * t_pf
    service = k * mean_len
    load = rate * jnp.where(ok, stats.mass, 1.0) * service

    if relaxed:
        servers = min_servers(load, service, scv, slo, q, max_util, C_MAX)
        replicas = servers / slots_s
    else:
        c_int = min_servers_int(load, service, scv, slo, q, max_util, C_MAX)
        replicas = jnp.ceil(c_int / slots_s)
        servers = replicas * slots_s
    sized = jnp.isfinite(servers) & (servers > 0)
    servers_s = jnp.where(sized, servers, load / max_util + 1.0)
    replicas_s = jnp.where(sized, replicas, 1.0)
    concurrency = load / replicas_s
    op = gpu(window, concurrency, relaxed)
    power = op["power"]
    gpus = replicas_s * sat["gpus_per_replica"]
    wait = mgc_wait_quantile(servers_s, load, service, scv, q)
    l_q = pool_quantile_length(tokens, cdf, lo, hi, q)
    ttft = wait + t_pf * (1.0 - share) * jnp.where(ok, l_q, 1.0)

    good = ok & sized & jnp.isfinite(power)
    nan = jnp.nan

    def per_request(x):
        return jnp.where(good, x, nan)

    def count(x):  # 0 for an empty pool, NaN where an occupied pool cannot be sized
        return jnp.where(good, x, jnp.where(has, nan, 0.0))

    return {
        "mass": stats.mass,
        "slots": jnp.where(kernel_ok, slots, nan),
        "iter_time": jnp.where(kernel_ok, sat["iter_time"], nan),
        "service_time": per_request(service),
        "scv": per_request(scv),
        "load": count(load),
        "servers": count(servers_s),
        "replicas": count(replicas_s),
        "gpus": count(gpus),
        "concurrency": per_request(concurrency),
        "util": per_request(load / servers_s),
        "p99_wait": per_request(wait),
        "p99_ttft": per_request(ttft),
        "power": per_request(power),
        "watts": count(gpus * jnp.where(good, power, 0.0)),
        "feasible": good | ~has,
    }


# --------------------------------------------------------------------------------------------
# One fleet design point

FLEET_OUTPUTS = (
    "fleet_tok_per_watt",
    "homogeneous_tok_per_watt",
    "gain",
    "gpus_short",
    "gpus_long",
    "gpus_two_pool",
    "gpus_homogeneous",
    "p99_ttft_short",
    "p99_ttft_long",
    "p99_ttft_homogeneous",
    "p99_wait_short",
    "p99_wait_long",
    "p99_wait_homogeneous",
    "util_short",
    "util_long",
    "util_homogeneous",
    "concurrency_short",
    "concurrency_long",
    "concurrency_homogeneous",
    "slots_short",
    "slots_long",
    "slots_homogeneous",
    "service_time_short",
    "service_time_long",
    "service_time_homogeneous",
    "power_short",
    "power_long",
    "power_homogeneous",
    "share_short",
    "rejected_share",
    "output_rate",
    "fleet_power",
    "homogeneous_power",
    "cost_per_mtok",
    "cost_per_mtok_homogeneous",
    "feasible",
    "feasible_homogeneous",
)


def split_inputs(p: Mapping, prefix: str) -> dict:
    """The shared inputs with one pool's ``prefix``-ed GPU inputs (prefix stripped) on top."""
    out = {k: v for k, v in p.items() if not k.startswith(("short_", "long_"))}
    out.update({k[len(prefix) :]: v for k, v in p.items() if k.startswith(prefix)})
    return out


def fleet_point(p: Mapping, make_gpu: Callable[[dict], GpuKernel], relaxed: bool = False) -> dict:
    """Every fleet output of one design point (see the module docstring); scalars out.

    ``make_gpu(inputs) -> run(window, batch, relaxed)`` builds a pool's per-GPU kernel from
    its inputs (:func:`roofline_gpu` or :func:`calibrated_gpu`, partially applied).
    """
    tokens, cdf, share = p["wl_tokens"], p["wl_cdf"], p["wl_output_share"]
    rate, slo, q, max_util = p["arrival_rate"], p["slo"], p["quantile"], p["max_util"]
    b, w = p["b_short"], p["w_long"]
    valid = b <= w
    b_s = jnp.where(valid, b, w)
    zero = jnp.zeros_like(w)
    # The three pools (short, long, homogeneous) as one batch of 3: one traced copy of the
    # pool computation instead of three (a third of the compile time), same values.
    shared = {k: v for k, v in p.items() if not k.startswith(("short_", "long_"))}
    own = {}
    for k, v in p.items():
        if k.startswith("short_"):
            name = k[len("short_") :]
            own[name] = jnp.stack([v, p["long_" + name], p["long_" + name]])
    windows = jnp.stack([b_s, w, w])
    los = jnp.stack([zero, b_s, zero])
    his = jnp.stack([b_s, w, w])

    def one_pool(gpu_inputs, window, lo, hi):
        gpu = make_gpu({**shared, **gpu_inputs})
        return serve_pool(gpu, window, lo, hi, rate, tokens, cdf, share, slo, q, max_util, relaxed)

    pools = jax.vmap(one_pool)(own, windows, los, his)
    short, long, homog = ({k: v[i] for k, v in pools.items()} for i in range(3))

    accepted, first, _ = partial_moments(tokens, cdf, zero, w)
    out_rate = rate * share * first
    two_watts = short["watts"] + long["watts"]
    feasible = valid & short["feasible"] & long["feasible"]
    feasible_h = homog["feasible"]
    nan = jnp.nan
    two_watts = jnp.where(feasible, two_watts, nan)
    homog_watts = jnp.where(feasible_h, homog["watts"], nan)

    def usd_per_s(pool, price):
        return jnp.where(pool["gpus"] > 0, pool["gpus"] * price, 0.0) / 3600.0

    cost = (usd_per_s(short, p["short_price"]) + usd_per_s(long, p["long_price"])) / out_rate
    cost_h = usd_per_s(homog, p["long_price"]) / out_rate
    out = {
        "fleet_tok_per_watt": out_rate / two_watts,
        "homogeneous_tok_per_watt": out_rate / homog_watts,
        "gain": homog_watts / two_watts,
        "gpus_two_pool": jnp.where(feasible, short["gpus"] + long["gpus"], nan),
        "share_short": jnp.where(valid, short["mass"] / accepted, nan),
        "rejected_share": 1.0 - accepted,
        "output_rate": out_rate,
        "fleet_power": two_watts,
        "homogeneous_power": homog_watts,
        "cost_per_mtok": jnp.where(feasible, cost * 1e6, nan),
        "cost_per_mtok_homogeneous": jnp.where(feasible_h, cost_h * 1e6, nan),
        "feasible": feasible,
        "feasible_homogeneous": feasible_h,
    }
    per_pool = ("gpus", "p99_ttft", "p99_wait", "util", "concurrency", "slots")
    per_pool += ("service_time", "power")
    for name, pool, ok in (
        ("short", short, feasible),
        ("long", long, feasible),
        ("homogeneous", homog, feasible_h),
    ):
        for key in per_pool:
            out[f"{key}_{name}"] = jnp.where(ok, pool[key], nan)
    return {k: out[k] for k in FLEET_OUTPUTS}

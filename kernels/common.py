"""Pieces shared by the calibrated and roofline kernels."""

import jax.numpy as jnp


def rounding(relaxed: bool):
    """floor and ceil, or the identity for the continuous relaxation used by gradients.

    floor() and ceil() have zero derivative almost everywhere; dropping them gives the
    relaxed model whose context elasticity is exactly -1 where the 1/W law holds.
    """
    if relaxed:
        return (lambda x: x), (lambda x: x)
    return jnp.floor, jnp.ceil


def apply_cap(n_max, max_seqs):
    """min(n_max, max_seqs) where a cap is given (max_seqs > 0), else n_max."""
    return jnp.where(max_seqs > 0, jnp.minimum(n_max, max_seqs), n_max)


def choose_batch(n_max, batch):
    """Sequences in flight: the saturated point n_max when batch == 0, else batch."""
    return jnp.where(batch > 0, batch, n_max)


def efficiency(n, iter_time_s, gpus_per_replica, power_w, feasible):
    """The outputs every mode reports, NaN where the point is infeasible.

    throughput = n / (t_iter * tp) output tokens/s per GPU; tok/W = throughput / P (tokens/J);
    energy per token = P / throughput (J).
    """
    nan = jnp.nan
    throughput = n / (iter_time_s * gpus_per_replica)
    tok_per_watt = throughput / power_w
    return {
        "concurrency": jnp.where(feasible, n, nan),
        "iter_time": jnp.where(feasible, iter_time_s, nan),
        "throughput": jnp.where(feasible, throughput, nan),
        "power": jnp.where(feasible, power_w, nan),
        "tok_per_watt": jnp.where(feasible, tok_per_watt, nan),
        "energy_per_token": jnp.where(feasible, power_w / throughput, nan),
        "feasible": feasible,
    }

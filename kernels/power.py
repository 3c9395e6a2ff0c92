"""GPU power models, per GPU, in watts.

Both are pure functions of one operating point; arrays broadcast elementwise.
"""

import jax.numpy as jnp


def logistic_power(n, power_idle, power_nominal, power_k, power_x0):
    """Logistic power curve in the number of sequences in flight.

        P(n) = P_idle + (P_nom - P_idle) / (1 + exp(-k * (log2(max(n, 1)) - x0)))

    n: sequences in flight (per replica); P_idle, P_nom: W; k, x0: dimensionless.
    Fitted to H100 measurements (ML.ENERGY benchmark v3.0; GPU-to-Grid, arXiv 2602.05116)
    by inference-fleet-sim (arXiv 2603.16054). P is linear and homogeneous in (P_idle, P_nom).
    """
    x = jnp.log2(jnp.maximum(n, 1.0))
    return power_idle + (power_nominal - power_idle) / (1.0 + jnp.exp(-power_k * (x - power_x0)))


def activity_power(tdp, kv_frac, compute_frac):
    """inference-fleet-sim's first-principles ("activity") power curve.

        P = tdp * (0.43 + 0.43 * min(1, kv_frac + compute_frac))

    kv_frac: share of the iteration's memory traffic that is KV reads;
    compute_frac: t_comp / t_iter. tdp in W.
    """
    return tdp * (0.43 + 0.43 * jnp.minimum(1.0, kv_frac + compute_frac))

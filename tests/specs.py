"""Spec fragments shared by several test files."""

# The h100 profile (MODEL.md section 1) with its power curve flattened: power_k = 1e-12 leaves
# P flat to ~1e-13 while the logistic formula and its gradients stay as in the catalog's curves.
FLAT_PROFILE = """
[profiles.flat]
tp = 8
w_s = 0.004
h_s = 0.00032
calib_ctx = 8192
max_slots = 256
kv_blocks = 65536
power_idle = 300.0
power_nominal = 600.0
power_k = 1e-12
power_x0 = 4.2
"""

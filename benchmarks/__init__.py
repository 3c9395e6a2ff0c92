"""Benchmarks of the sweep engine (see benchmarks/README.md)."""

"""Benchmarks of the worker against the API emulator: `python -m bench --help` (BENCHMARKS.md)."""

"""Runs the whole tienda system on one machine (make run) and benchmarks it (make bench).

Public API: `Stack`, `Ports`, `resident_memory_bytes` in `tienda_devstack.stack`.
"""

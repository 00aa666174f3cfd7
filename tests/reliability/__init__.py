"""Reliability tests: hostile requests, SIGKILL under write load, poisoned data on restart.

Every test here runs `interest-tree serve` as a real process on a loopback port over a real
data directory (see `support.py`).
"""

"""Markers of the reliability tests; they run in every `pytest` run, CI included."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: starts real server processes and runs for a minute or more"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from .support import SUMMARY

    if SUMMARY:
        terminalreporter.section("reliability")
        for line in SUMMARY:
            terminalreporter.write_line(line)

"""Shared pieces of the reliability suite: the long-mode switch and the hang timeout.

CI runs the short mode. ``ACTORKV_LONG=1`` turns on long mode: many more kill -9 rounds,
longer concurrency runs and longer linearizability histories.
"""

from __future__ import annotations

import os

import pytest

LONG_MODE = os.environ.get("ACTORKV_LONG") == "1"
"""Whether ``ACTORKV_LONG=1`` asked for the long runs."""

TIMEOUT = 30.0
"""Seconds any wait may take before a test calls it hung (never a timing assertion)."""


@pytest.fixture
def long_mode() -> bool:
    """True under ``ACTORKV_LONG=1``: tests scale their rounds and durations up."""
    return LONG_MODE

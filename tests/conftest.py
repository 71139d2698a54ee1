"""Shared test fixtures: the real-data samples shipped in tests/data/realdata (its README: source, licences)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO / "tests" / "data" / "realdata"  # the one path to the real samples; test modules import it


@pytest.fixture
def realdata() -> Path:
    return REALDATA

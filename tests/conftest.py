"""Shared fixtures: the ISA sweep and the shared model folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from mopt.testing.random_inputs import ISAS, available_isas

SHARED = Path(__file__).resolve().parents[2] / "shared"


def isa_params() -> list:
    """Every ISA tier; the ones this machine lacks are skipped with the reason."""
    have = available_isas()
    return [pytest.param(i, marks=pytest.mark.skipif(i not in have, reason=f"{i} not available on this CPU")) for i in ISAS]


@pytest.fixture(params=isa_params())
def isa(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def shared_models() -> Path:
    models = SHARED / "models"
    if not models.is_dir():
        pytest.skip("../shared/models is not present")
    return models

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Within a module that sets MODEL_MAJOR_ORDER = True, every ISA of one model (parameter `name`)
    and level runs before the next: such a module caches only the current model's compiled forms
    (the nine light models, compiled at two levels and all kept, need over 10 GB)."""
    first: dict[object, int] = {}
    for i, item in enumerate(items):
        first.setdefault(getattr(item, "module", None), i)
        first.setdefault((getattr(item, "module", None), getattr(item, "originalname", "")), i)

    def key(indexed: tuple[int, pytest.Item]) -> tuple:
        i, item = indexed
        module = getattr(item, "module", None)
        if not getattr(module, "MODEL_MAJOR_ORDER", False) or not hasattr(item, "callspec"):
            return (first[module], i, "", "")
        params = item.callspec.params
        return (first[module], first[(module, item.originalname)], str(params.get("name", "")), str(params.get("level", "")))

    items[:] = [item for _, item in sorted(enumerate(items), key=key)]

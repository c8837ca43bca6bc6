"""Fixtures for the budgets tests: a bot whose every call costs exactly its worst case.

With an input price of 0 and the fake reporting ``max_output_tokens`` completion tokens, a
call settles at exactly what it reserved, so "a budget that fits 10" fits exactly 10 calls
whatever order they finish in.
"""

from __future__ import annotations

from typing import Any

import pytest

#: the fake provider's output limit and the price that makes one call cost exactly $0.001
MAX_OUT = 100
PRICES = {"gpt-4o-mini": {"input": 0.0, "output": 10.0}, "gpt-4o": {"input": 0.0, "output": 100.0}}
CALL_USD = MAX_OUT * 10.0 / 1_000_000  # $0.001


def budget_config(budgets: dict[str, Any], **provider: Any) -> dict[str, Any]:
    """Config overrides: ``[plugins.budgets]`` = ``budgets``, exact prices, the output limit."""
    return {
        "bot": {"admins": ["fake:admin"]},
        "prices": PRICES,
        "providers": {"fake": {"max_output_tokens": MAX_OUT, "max_retries": 0, **provider}},
        "plugins": {"budgets": budgets},
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A database URL per backend (PostgreSQL: a fresh database, skipped when absent)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'budgets.db'}"
    return str(request.getfixturevalue("pg_url"))

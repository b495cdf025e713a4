"""Fixture `new_run`: a run with a stored content model, ready for deliverable requests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from runloom.contracts.content import ContentModel
from runloom.devkit.deliverables import TestRun
from runloom.devkit.deliverables import new_run as _new_run


@pytest.fixture
def new_run(js: Any) -> Callable[[str, ContentModel], Awaitable[TestRun]]:
    async def make(tenant_id: str, content: ContentModel) -> TestRun:
        return await _new_run(js, tenant_id, content)

    return make

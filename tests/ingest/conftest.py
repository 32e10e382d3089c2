"""Fixtures shared by the API tests: settings for the session's broker and Redis, and the API
running on them (a real uvicorn server on a loopback port, see helpers.running_api)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.settings import CommonSettings, IngestSettings
from tests.ingest.helpers import ingest_settings_for, running_api


@pytest.fixture
def settings(common_settings: CommonSettings) -> IngestSettings:
    return ingest_settings_for(common_settings)


@pytest.fixture
async def api(settings: IngestSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(settings) as client:
        yield client

"""The policy the API applies (pre-send decisions): the stored one, else the packaged default.

One cheap GET of the version per use; the document is read and parsed only when it moved. A
stored policy that does not parse (written by hand into Redis) is logged and the last good one
(or the default) stays in force — as in the scorer.
"""

from __future__ import annotations

import asyncio
import logging

from services.errors import PolicyError
from services.policy import Policy, default_policy
from services.policy_store import PolicySource

log = logging.getLogger(__name__)


class PolicyCache:
    def __init__(self, source: PolicySource, fallback: Policy | None = None) -> None:
        self._source = source
        self._fallback = fallback or default_policy()
        self._stamp: str | None = None
        self._version: int | None = None
        self._policy = self._fallback
        self._lock = asyncio.Lock()

    async def current(self) -> tuple[int | None, Policy]:
        """(stored version or None, policy in force). Raises StoreUnavailable when Redis fails."""
        stamp = await self._source.version_stamp()
        if stamp != self._stamp:
            async with self._lock:
                if stamp != self._stamp:
                    await self._reload(stamp)
        return self._version, self._policy

    async def _reload(self, stamp: str | None) -> None:
        try:
            self._version, self._policy = await self._source.current(self._fallback)
        except PolicyError as exc:
            log.error("stored policy is invalid, keeping version %s: %s", self._version, exc)
        self._stamp = stamp

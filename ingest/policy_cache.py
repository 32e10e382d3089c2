"""The policy the API applies (pre-send decisions, explanations, lists): the stored one, else the
file FATIGUE_POLICY_FILE names (the scorer's: give both the same), else the packaged default.

One cheap GET of the version per use (`current`), or none when the caller read the version stamp
together with the snapshot it decides on (`in_force_at`: one Redis round trip per decision); the
document is read and parsed only when the stamp moved. A
stored policy that does not parse (written by hand into Redis) is logged and the last good one
(or the default) stays in force — as in the scorer: both are `services.policy.resolver.PolicyResolver`,
which also says how the fallbacks are chosen.
"""

from __future__ import annotations

import logging
from pathlib import Path

from services.policy.model import Policy, default_policy
from services.policy.resolver import PolicyEvent, PolicyRefused, PolicyResolver
from services.policy.store import PolicySource

log = logging.getLogger(__name__)


class PolicyCache:
    def __init__(self, source: PolicySource, fallback: Policy | None = None, *, file: Path | None = None) -> None:
        # poll_s=0: the stored version is checked on every use, so a PUT is in force for the next decision.
        if file is not None:
            self._policies = PolicyResolver(source, file=file, poll_s=0.0, on_event=self._report)
        else:
            self._policies = PolicyResolver(source, fallback=fallback or default_policy(), poll_s=0.0,
                                            on_event=self._report)
        self._stamp: str | None = None
        self._stamp_loaded = False

    async def current(self) -> tuple[int | None, Policy]:
        """(stored version or None, policy in force). Raises StoreUnavailable when Redis fails."""
        in_force = await self._policies.refresh()
        return in_force.version, in_force.policy

    async def in_force_at(self, stamp: str | None) -> tuple[int | None, Policy]:
        """(stored version or None, policy in force) when the stored version stamp is `stamp`, as the
        caller just read it (`SnapshotReader.get_with_policy_stamp`). Nothing is read while the stamp
        is the one last loaded; when it moved, `current()` loads what is stored now — at least as new
        as `stamp`, since the counter only grows. Raises StoreUnavailable when Redis fails."""
        if self._stamp_loaded and stamp == self._stamp:
            in_force = self._policies.in_force
            return in_force.version, in_force.policy
        version, policy = await self.current()
        self._stamp, self._stamp_loaded = stamp, True
        return version, policy

    @staticmethod
    def _report(event: PolicyEvent) -> None:
        if isinstance(event, PolicyRefused):
            log.error("stored policy is invalid, keeping version %s: %s", event.kept.version, event.error)

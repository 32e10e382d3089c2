"""The policy in force, resolved and cached the same way by the API and the scorer.

Precedence (docs/policy.md#changing-the-policy-without-restart): a valid policy stored through
`PUT /v1/policy` wins; while none is stored, the *fallback* applies. What the fallback is differs
by process, and this is the one place that says so:

- scorer (`scorer.app.PolicyReloader`): the fallback is `FATIGUE_POLICY_FILE`, else the packaged
  `services/policy/policy.yaml`; it watches the stored version and that file.
- API (`ingest.policy_cache.PolicyCache`, pre-send decisions): the fallback is the packaged default;
  the API has no `FATIGUE_POLICY_FILE` setting and never reads a scorer's file; it watches the
  stored version only.

So with no stored policy, a scorer started with its own `FATIGUE_POLICY_FILE` throttles by that
file while the API's decisions use the packaged default (documented: docs/policy.md, docs/api.md).

How it is kept current (`PolicyResolver`):

- The stored policy is polled by its version stamp (one cheap GET); the document is read and
  parsed only when the stamp moved, or on the first load. The counter also moves when the stored
  policy is removed, so the fallback comes back.
- The file is polled by its stamp (inode, size, mtime: a ConfigMap's symlink swap shows as a new
  inode). A changed, valid file becomes the fallback; it is in force only while nothing is stored.
- An invalid document (a stored one written into Redis by hand, a bad edit of the file, a removed
  file) never replaces a valid one: the policy in force stays and `PolicyRefused` is reported once
  per change (the same stamp is not parsed again). Only an invalid file at construction raises.
  With `vet` (the scorer passes its dry run through the core), a document that parses but that the
  core cannot run is refused the same way.
- `refuse_in_force(error)`: the core failed on live data with the policy in force although it
  passed the checks. The previous policy (else the fallback, else the packaged default) comes back
  into force, and the refused stored version is never swapped in again.
- `refresh()` polls at most every `poll_s` seconds (0: on every call); `poll()` polls now.
- Nothing is logged or counted here: each change is reported to `on_event`, and the caller logs
  and counts it its own way (scorer: `fatigue_scorer_policy_*` metrics and its log lines).

Redis failures propagate as StoreUnavailable (retriable) and change nothing, so the next poll
tries again.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from services.errors import ConfigError, PolicyError
from services.policy.model import Policy, default_policy, load_policy

__all__ = [
    "FilePolicyShadowed",
    "PolicyEvent",
    "PolicyInForce",
    "PolicyRefused",
    "PolicyResolver",
    "PolicySwapped",
    "StoredPolicyReader",
]


class StoredPolicyReader(Protocol):
    """What is read from the policy store (`services.policy.store.PolicySource` on Redis)."""

    async def version_stamp(self) -> str | None:
        """A value that changes whenever the stored policy is replaced or removed (None: never stored)."""
        ...

    async def current(self, fallback: Policy) -> tuple[int | None, Policy]:
        """(version, policy) stored, or (None, fallback); PolicyError when the document is invalid."""
        ...


@dataclass(frozen=True)
class PolicyInForce:
    version: int | None
    """Version of the stored policy in force; None while the fallback (file or default) is."""
    policy: Policy


@dataclass(frozen=True)
class PolicySwapped:
    """`current` is now in force (also reported once on the first load, even when unchanged)."""

    current: PolicyInForce
    cause: Literal["file", "store", "runtime"]


@dataclass(frozen=True)
class PolicyRefused:
    """A new document from `source` is invalid (or the file unreadable), or the policy in force failed
    at run time (`runtime`); `kept` is in force."""

    source: Literal["file", "store", "runtime"]
    error: ConfigError
    kept: PolicyInForce


@dataclass(frozen=True)
class FilePolicyShadowed:
    """The file changed and is valid, but the stored policy `in_force` still wins."""

    path: Path
    in_force: PolicyInForce


PolicyEvent = PolicySwapped | PolicyRefused | FilePolicyShadowed


@dataclass(frozen=True)
class _FileStamp:
    inode: int
    size: int
    mtime_ns: int


def _file_stamp(path: Path) -> _FileStamp | None:
    try:
        st = os.stat(path)  # follows symlinks: a ConfigMap's atomic symlink swap shows as a new inode
    except OSError:
        return None
    return _FileStamp(st.st_ino, st.st_size, st.st_mtime_ns)


def _ignore(event: PolicyEvent) -> None:
    pass


class PolicyResolver:
    """The policy in force: stored, else `file` (when given), else `fallback` (packaged default).

    Give `file` (the scorer) or `fallback` (the API), not both. Raises ConfigError when `file` is
    invalid at construction.
    """

    def __init__(
        self,
        store: StoredPolicyReader,
        *,
        file: Path | None = None,
        fallback: Policy | None = None,
        poll_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[PolicyEvent], None] = _ignore,
        vet: Callable[[Policy], None] | None = None,
    ) -> None:
        if file is not None and fallback is not None:
            raise ValueError("give a policy file or a fallback policy, not both")
        self._store = store
        self._file = file
        self._poll_s = poll_s
        self._clock = clock
        self._on_event = on_event
        self._vet = vet
        self._file_stamp = _file_stamp(file) if file is not None else None
        self._fallback = load_policy(file) if file is not None else (fallback or default_policy())
        if vet is not None:
            vet(self._fallback)
        self._in_force = PolicyInForce(None, self._fallback)
        self._previous: PolicyInForce | None = None
        self._refused_versions: set[int] = set()
        self._loaded = False
        self._seen_stamp: str | None = None
        self._last_poll: float | None = None
        self._lock = asyncio.Lock()

    @property
    def in_force(self) -> PolicyInForce:
        return self._in_force

    @property
    def fallback(self) -> Policy:
        """What applies while nothing is stored: the latest valid file, or the fallback given."""
        return self._fallback

    @property
    def file(self) -> Path | None:
        return self._file

    async def ensure_loaded(self) -> PolicyInForce:
        """Poll once if never done: a stored policy must be in force before it is first used."""
        if not self._loaded:
            return await self.poll()
        return self._in_force

    async def refresh(self) -> PolicyInForce:
        """The policy in force, polled first when `poll_s` has passed since the last poll (or never polled)."""
        due = self._last_poll is None or self._clock() - self._last_poll >= self._poll_s
        if due or not self._loaded:
            return await self.poll()
        return self._in_force

    async def poll(self) -> PolicyInForce:
        """Check the file and the stored version now; swap in what changed and is valid.

        The file is checked first, so a file change is taken even when Redis does not answer
        (StoreUnavailable is raised after it). Unchanged stamps cost one `stat` and one GET.
        """
        started = self._clock()
        if self._file is not None and _file_stamp(self._file) != self._file_stamp:
            async with self._lock:
                await self._check_file()
        stamp = await self._store.version_stamp()
        if not self._loaded or stamp != self._seen_stamp:
            async with self._lock:
                if not self._loaded or stamp != self._seen_stamp:  # not already done by a concurrent poll
                    await self._check_store(stamp)
        self._last_poll = started
        return self._in_force

    async def _check_file(self) -> None:
        assert self._file is not None
        stamp = _file_stamp(self._file)
        if stamp == self._file_stamp:
            return
        self._file_stamp = stamp
        try:
            policy = await asyncio.to_thread(self._load_file, self._file)
        except ConfigError as exc:
            self._on_event(PolicyRefused("file", exc, self._in_force))
            return
        self._fallback = policy
        if self._in_force.version is None:
            self._swap(PolicyInForce(None, policy), "file")
        else:
            self._on_event(FilePolicyShadowed(self._file, self._in_force))

    def _load_file(self, path: Path) -> Policy:
        policy = load_policy(path)
        if self._vet is not None:
            self._vet(policy)
        return policy

    async def _check_store(self, stamp: str | None) -> None:
        try:
            version, policy = await self._store.current(self._fallback)
            if version is not None and version in self._refused_versions:
                self._seen_stamp, self._loaded = stamp, True
                return  # refused at run time: stays out until a new version is stored
            if version is not None and self._vet is not None:
                await asyncio.to_thread(self._vet, policy)
        except ConfigError as exc:  # PolicyError: an invalid document; StoreUnavailable propagates
            self._on_event(PolicyRefused("store", exc, self._in_force))
        else:
            candidate = PolicyInForce(version, policy)
            if not self._loaded or candidate != self._in_force:
                self._swap(candidate, "store")
        self._seen_stamp, self._loaded = stamp, True

    def fallback_for_failure(self) -> Policy | None:
        """What `refuse_in_force` would put in force (None: nothing different from the policy in force)."""
        replacement = self._replacement()
        return None if replacement.policy is self._in_force.policy else replacement.policy

    def _replacement(self) -> PolicyInForce:
        previous = self._previous
        if previous is not None and previous.version not in self._refused_versions:
            return previous
        if self._in_force.version is not None:
            return PolicyInForce(None, self._fallback)
        default = default_policy()
        return PolicyInForce(None, default) if default != self._in_force.policy else self._in_force

    def refuse_in_force(self, error: BaseException) -> PolicyInForce:
        """The core failed on live data under the policy in force: put the replacement in force."""
        failed, replacement = self._in_force, self._replacement()
        if replacement.policy is failed.policy:
            return failed
        if failed.version is not None:
            self._refused_versions.add(failed.version)
        else:
            self._fallback = replacement.policy  # the file's policy stays out until the file changes
        self._on_event(PolicyRefused("runtime", PolicyError(f"{type(error).__name__}: {error}"), replacement))
        self._previous = None
        self._in_force = replacement
        self._on_event(PolicySwapped(replacement, "runtime"))
        return replacement

    def _swap(self, in_force: PolicyInForce, cause: Literal["file", "store", "runtime"]) -> None:
        if in_force.policy is not self._in_force.policy:
            self._previous = self._in_force
        self._in_force = in_force  # one assignment: readers see the old or the new policy, never a mix
        self._on_event(PolicySwapped(in_force, cause))

"""Vended credentials that expire: renewed before expiry, renewed again after a refusal.

delta-rs builds a table's object store from the storage options once, when the table is
opened, and never refreshes them. So the cache here renews a table's credentials some time
before they expire (a third of their lifetime, at most `margin` seconds), hands out the new
options, and `TableStore` re-opens any `DeltaTable` that still holds the old ones. A write
that fails anyway with an expired-credential error renews and retries (the sink's appends
are idempotent per batch), so nothing is lost at an expiry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("pidelta.credentials")

# Texts object_store reports when a store refuses credentials that have run out.
_EXPIRED_MARKERS = (
    "expiredtoken",
    "token has expired",
    "token is expired",
    "request has expired",
    "authenticationfailed",
    "invalidaccesskeyid",
    "sas token expired",
    "signature not valid in the specified time frame",
    "invalid_grant",
    "403 forbidden",
    "status: 403",
    "status 403",
    "401 unauthorized",
    "status: 401",
)


def is_expired_credential_error(exc: BaseException) -> bool:
    """True when an object-store error looks like refused or expired credentials."""
    text = str(exc).lower()
    return any(marker in text for marker in _EXPIRED_MARKERS)


@dataclass(frozen=True, slots=True)
class Vended:
    """Storage options valid until `expires_at` (epoch seconds; None: no expiry)."""

    options: dict[str, str]
    expires_at: float | None = None
    issued_at: float = 0.0


class CredentialCache:
    """Per-table vended credentials, renewed ahead of expiry; thread-safe.

    `vend(name)` asks the catalog for fresh credentials. Each renewal bumps the table's
    generation, which `TableStore` compares with the generation a `DeltaTable` was opened
    with.
    """

    def __init__(
        self,
        vend: Callable[[str], Vended],
        *,
        margin: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._vend = vend
        self.margin = margin
        self._clock = clock
        self._lock = threading.Lock()
        self._current: dict[str, Vended] = {}
        self._generation: dict[str, int] = {}
        self.renewals = 0

    def _due(self, vended: Vended) -> bool:
        if vended.expires_at is None:
            return False
        lifetime = max(0.0, vended.expires_at - vended.issued_at)
        lead = min(self.margin, lifetime / 3)
        return self._clock() >= vended.expires_at - lead

    def get(self, name: str) -> tuple[dict[str, str], int]:
        """The table's current options and their generation, renewed first when due."""
        with self._lock:
            vended = self._current.get(name)
            if vended is None or self._due(vended):
                vended = self._renew(name, "expiring" if vended else "first use")
            return dict(vended.options), self._generation[name]

    def generation(self, name: str) -> int:
        with self._lock:
            return self._generation.get(name, 0)

    def renew(self, name: str, failed_generation: int | None = None) -> None:
        """Renew now (after a refusal); a no-op when another thread already renewed."""
        with self._lock:
            if failed_generation is not None and self._generation.get(name) != failed_generation:
                return
            self._renew(name, "refused by the store")

    def _renew(self, name: str, why: str) -> Vended:
        vended = self._vend(name)
        if not vended.issued_at:
            vended = Vended(vended.options, vended.expires_at, self._clock())
        self._current[name] = vended
        self._generation[name] = self._generation.get(name, 0) + 1
        self.renewals += 1
        left = "ever" if vended.expires_at is None else f"{vended.expires_at - self._clock():.0f} s"
        log.info("credentials for %s renewed (%s); valid for %s", name, why, left)
        return vended

"""The seam between the PI client and an authentication scheme: what the client hands over.

Kept apart from `auth.py` so that a scheme in its own module (`kerberos.py`) implements the
protocol without importing the module that chooses the scheme.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp


@dataclass(frozen=True, slots=True)
class Challenge:
    """A 401 answer: what the request carried and what the server offers back."""

    sent: str  # the Authorization header of the refused request, "" when it had none
    offers: Sequence[str]  # the WWW-Authenticate values of the 401
    retried: bool  # the request was already sent again after an earlier 401


class Authenticator(Protocol):
    """Supplies the Authorization header of each request and judges the answers."""

    scheme: str

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        """Headers to add to the next request (may fetch a token first)."""
        ...

    async def refresh(self, session: aiohttp.ClientSession, challenge: Challenge) -> bool:
        """Called on a 401: True when the request should be sent once more. Never True for
        a request already `retried`, so a refusal costs at most one more round trip."""
        ...

    def verify(self, sent: str, offers: Sequence[str]) -> str | None:
        """Called on a 2xx with its WWW-Authenticate values: why the server's proof of its
        identity is not good, or None (also when the scheme has no such proof)."""
        ...

"""HTTP Negotiate as PI Web API does it under IIS Windows authentication (Kerberos only).

A request without a token gets 401 `WWW-Authenticate: Negotiate`; a token is accepted only
when the service keytab (`MOCK_PI_KEYTAB`) decrypts it for `MOCK_PI_KERBEROS_PRINCIPAL`
(default `HTTP/<host>`); the answer then carries the mutual-authentication token. A refused
token gets the KRB-ERROR that MIT Kerberos makes of it (clock skew, no key for the ticket),
as a Windows server does. Counts of each outcome (and of tokens that delegated the client's
credentials) are served for the tests.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from pathlib import Path

import gssapi
from gssapi.exceptions import GSSError

log = logging.getLogger("mock_pi")


class Negotiator:
    """Accepts Negotiate tokens with a service keytab; one fresh context per request."""

    def __init__(self, keytab: Path, principal: str) -> None:
        self.principal = principal
        name = gssapi.Name(principal, gssapi.NameType.kerberos_principal)
        # Fails at start-up when the keytab holds no key for the principal.
        self._creds = gssapi.Credentials(
            name=name, usage="accept", store={b"keytab": str(keytab).encode()}
        )
        self._lock = threading.Lock()
        self.counts = {"challenged": 0, "accepted": 0, "refused": 0, "delegated": 0}
        self.clients: set[str] = set()

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.counts[outcome] += 1

    def accept(self, header: str | None) -> tuple[bool, str | None]:
        """(accepted, the WWW-Authenticate value to send back, if any)."""
        scheme, _, value = (header or "").strip().partition(" ")
        if scheme.lower() != "negotiate" or not value.strip():
            self._count("challenged")
            return False, "Negotiate"
        try:
            token = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            self._count("refused")
            return False, "Negotiate"
        ctx = gssapi.SecurityContext(creds=self._creds, usage="accept")
        answer = b""
        try:
            # A failed step returns the KRB-ERROR token and raises on the next look at ctx.
            answer = ctx.step(token) or b""
            complete = ctx.complete
        except GSSError as exc:
            self._count("refused")
            log.info("Negotiate token refused: %s", " ".join(str(exc).split()))
            error = getattr(exc, "token", None) or answer
            return False, "Negotiate " + base64.b64encode(error).decode() if error else "Negotiate"
        if not complete:
            self._count("refused")
            return False, "Negotiate"
        self._count("accepted")
        if ctx.delegated_creds is not None:
            self._count("delegated")
        with self._lock:
            self.clients.add(str(ctx.initiator_name))
        return True, "Negotiate " + base64.b64encode(answer).decode() if answer else None

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {**self.counts, "clients": sorted(self.clients)}

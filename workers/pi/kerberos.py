"""Kerberos to PI Web API: HTTP Negotiate (RFC 4559) through MIT Kerberos' GSSAPI.

python-gssapi does the protocol; this module only decides which credentials, when to
renew them and what a failure means to the person who must fix it.

Credentials come from a keytab (`PIDELTA_PI_KEYTAB` + `PIDELTA_PI_PRINCIPAL`), else a
user and password (`PIDELTA_PI_USERNAME` / `PIDELTA_PI_PASSWORD`, no kinit), else the
ticket cache `KRB5CCNAME`. Tickets from a keytab or a password live in a private in-memory
cache of this process; the user's own cache is never written.

The protocol, as PI Web API under IIS expects it: the first request goes bare; a 401 with
`WWW-Authenticate: Negotiate` is answered once with a token for `HTTP@<host>`; from then on
every request carries a fresh token built from the cached service ticket (no trip to the
KDC, about 0.1 ms), so pooled connections never meet another 401. The server's
mutual-authentication token on a 2xx is verified; a KRB-ERROR token on a 401 is read for
its cause. Delegation only with `PIDELTA_PI_KERBEROS_DELEGATE=true`.

Tickets of any lifetime: past half of it they are renewed in a thread (a keytab is read
again from disk, so a rotated one is used; a ticket cache is read again, for whatever
renews it outside). A failed renewal warns and is tried again at half the time left,
while the tickets in hand stay valid.

Failures: at start-up, and until the first request passes, a Kerberos failure is
configuration (ConfigError, exit 2) named by cause and setting; later it is a
KerberosError, which the worker treats like PI being unavailable.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import gssapi
import gssapi.raw
from gssapi.exceptions import GSSError
from pydantic import SecretStr

from workers.errors import ConfigError, KerberosError
from workers.pi.auth_protocol import Challenge
from workers.settings import Settings

log = logging.getLogger(__name__)

# Tickets are renewed once this share of their lifetime has passed: MIT Kerberos itself
# refreshes keytab tickets only from half-life on, so asking earlier would get the old ones.
RENEW_FRACTION = 0.55
MIN_RENEW_SECONDS = 1.0
# A refused token renews the tickets at most this often; between, a refusal is final.
FORCED_RENEW_SECONDS = 30.0
# Contexts waiting for the server's answer; requests that never got one are dropped first.
MAX_PENDING = 4096

# MIT krb5 error codes (krb5.h), as the minor status of a GSSError.
_C_PRINCIPAL_UNKNOWN = -1765328378
_S_PRINCIPAL_UNKNOWN = -1765328377
_CLIENT_REVOKED = -1765328366
_KEY_EXP = -1765328361
_PREAUTH_FAILED = -1765328360
_BAD_INTEGRITY = -1765328353
_TKT_EXPIRED = -1765328352
_TKT_NYV = -1765328351
_NOKEY = -1765328349
_SKEW = -1765328347
_MODIFIED = -1765328343
_BADKEYVER = -1765328340
_CC_NOTFOUND = -1765328243
_REALM_UNKNOWN = -1765328230
_KDC_UNREACH = -1765328228
_KT_NOTFOUND = -1765328203
_FCC_NOFILE = -1765328189
_REALM_CANT_RESOLVE = -1765328164
_NO_KEY_IN_CACHE = {_CC_NOTFOUND, _FCC_NOFILE, _KT_NOTFOUND}
_WRONG_SECRET = {_PREAUTH_FAILED, _BAD_INTEGRITY}
_NO_KDC = {_KDC_UNREACH, _REALM_UNKNOWN, _REALM_CANT_RESOLVE}
_SERVER_LACKS_KEY = {_NOKEY, _BADKEYVER, _MODIFIED}


def _minor(exc: GSSError) -> int:
    """The krb5 error code of a GSSError (the minor status, signed as krb5.h has it)."""
    code = int(getattr(exc, "min_code", 0) or 0)
    return code - (1 << 32) if code >= 1 << 31 else code


def _library_text(exc: GSSError) -> str:
    """What MIT Kerberos said: the minor status, or the major one when the minor says
    nothing (a malformed token)."""
    text = " ".join(str(exc).split())
    match = re.search(r"Major \(\d+\): (.*?),? Minor \(\d+\): (.*)$", text)
    if match is None:
        return text
    major, minor = match.group(1).rstrip("."), match.group(2)
    return major if minor in ("Success", "Unknown error") else minor


@dataclass(frozen=True, slots=True)
class Login:
    """Where the client credentials come from, and the service they are for."""

    source: str  # "keytab", "password" or "ccache"
    principal: str | None
    keytab: Path | None
    keytab_setting: str  # how to name the keytab in a message
    password: SecretStr | None
    service_host: str
    delegate: bool
    krb5_config: str
    ccache: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Login:
        host = settings.pi_kerberos_hostname or urlsplit(settings.pi_url).hostname or ""
        keytab, keytab_setting = settings.pi_keytab, f"PIDELTA_PI_KEYTAB={settings.pi_keytab}"
        if settings.pi_keytab_base64 is not None:
            keytab = _private_keytab(settings.pi_keytab_base64.get_secret_value())
            keytab_setting = "PIDELTA_PI_KEYTAB_BASE64"
        if keytab is not None:
            source, principal = "keytab", settings.pi_principal
        elif settings.pi_password is not None:
            source, principal = "password", settings.pi_username
        else:
            source, principal = "ccache", settings.pi_principal or settings.pi_username
        return cls(
            source=source,
            principal=principal,
            keytab=keytab,
            keytab_setting=keytab_setting,
            password=settings.pi_password,
            service_host=host,
            delegate=settings.pi_kerberos_delegate,
            krb5_config=str(settings.krb5_config or "/etc/krb5.conf"),
            ccache=settings.krb5ccname,
        )

    def __repr__(self) -> str:
        return f"Login(source={self.source!r}, principal={self.principal!r})"

    @property
    def spn(self) -> str:
        return f"HTTP/{self.service_host}"

    @property
    def who(self) -> str:
        return self.principal or "the ticket cache's principal"

    @property
    def principal_setting(self) -> str:
        return "PIDELTA_PI_USERNAME" if self.source == "password" else "PIDELTA_PI_PRINCIPAL"

    def explain(self, exc: GSSError) -> str:
        """One line: the cause, and the setting or the party that can fix it."""
        code = _minor(exc)
        said = _library_text(exc)
        if code == _C_PRINCIPAL_UNKNOWN:
            return (
                f"Kerberos: the KDC does not know the principal {self.who} "
                f"(check {self.principal_setting})"
            )
        if code in _WRONG_SECRET and self.source == "password":
            return f"Kerberos: wrong password for {self.who} (check PIDELTA_PI_PASSWORD)"
        if code in _WRONG_SECRET and self.source == "keytab":
            return (
                f"Kerberos: the key of {self.who} in {self.keytab_setting} is not the KDC's (a "
                "stale or wrong keytab: export it again)"
            )
        if code in _NO_KEY_IN_CACHE and self.source == "keytab":
            return (
                f"Kerberos: {self.keytab_setting} holds no key for {self.who} "
                "(check PIDELTA_PI_PRINCIPAL)"
            )
        if code in _NO_KEY_IN_CACHE and self.source == "ccache":
            whose = f" for {self.principal}" if self.principal else ""
            return (
                f"Kerberos: no ticket{whose} in the ticket cache "
                f"KRB5CCNAME={self.ccache or 'default'} (run kinit, or set PIDELTA_PI_KEYTAB "
                "and PIDELTA_PI_PRINCIPAL)"
            )
        if code in _NO_KDC:
            realm = re.search(r"realm '([^']*)'", said)
            where = f"realm {realm.group(1)}" if realm else "the realm"
            return (
                f"Kerberos: no KDC reachable for {where} (check the kdc entries of "
                f"KRB5_CONFIG={self.krb5_config} and the network)"
            )
        if code in (_SKEW, _TKT_NYV):
            return (
                "Kerberos: the clocks of this host, the KDC and the PI server differ by more "
                "than the allowed skew (sync them with NTP; clockskew in KRB5_CONFIG)"
            )
        if code == _S_PRINCIPAL_UNKNOWN:
            return (
                f"Kerberos: the KDC has no service principal {self.spn} for the PI server "
                "(set PIDELTA_PI_KERBEROS_HOSTNAME to the host name of its SPN)"
            )
        if code in _SERVER_LACKS_KEY:
            return (
                f"Kerberos: the PI server cannot read the ticket for {self.spn} (its keytab "
                "lacks that key: ask the PI administrator, or set PIDELTA_PI_KERBEROS_HOSTNAME "
                "to the host name of its SPN)"
            )
        if code == _KEY_EXP:
            return (
                f"Kerberos: the password of {self.who} has expired (change it, then "
                "PIDELTA_PI_PASSWORD)"
            )
        if code == _CLIENT_REVOKED:
            return f"Kerberos: the principal {self.who} is disabled or locked out at the KDC"
        if code == _TKT_EXPIRED or exc.maj_code == gssapi.raw.GSS_S_CREDENTIALS_EXPIRED:
            return (
                f"Kerberos: the tickets of {self.who} have expired (renew the ticket cache, "
                "or use PIDELTA_PI_KEYTAB)"
            )
        return f"Kerberos: {said} (principal {self.who}, service {self.spn})"


def _private_keytab(text: str) -> Path:
    """PIDELTA_PI_KEYTAB_BASE64 as a file only this user reads, removed when the process ends."""
    folder = tempfile.mkdtemp(prefix="pidelta-keytab-")
    path = Path(folder) / "client.keytab"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.b64decode("".join(text.split())))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return path


class Tickets:
    """The client credentials in hand; `acquire` (blocking, in a thread) renews them."""

    def __init__(self, login: Login) -> None:
        self.login = login
        self._cache = self._new_cache_name()
        kind = gssapi.NameType.kerberos_principal
        self._name = gssapi.Name(login.principal, kind) if login.principal else None
        self.spn = gssapi.Name(f"HTTP@{login.service_host}", gssapi.NameType.hostbased_service)
        self.flags = gssapi.RequirementFlag.mutual_authentication
        if login.delegate:
            self.flags |= gssapi.RequirementFlag.delegate_to_peer

    @staticmethod
    def _new_cache_name() -> bytes:
        return f"MEMORY:pidelta-{os.getpid()}-{secrets.token_hex(8)}".encode()

    def acquire(self, *, fresh: bool = False) -> tuple[gssapi.Credentials, float | None]:
        """Credentials with the service ticket already in their cache, and their lifetime.

        `fresh`: new tickets now (a keytab gets a new cache, so MIT cannot reuse the old).
        """
        if fresh and self.login.source == "keytab":
            self._cache = self._new_cache_name()
        login = self.login
        if login.source == "keytab":
            store = {b"client_keytab": str(login.keytab).encode(), b"ccache": self._cache}
            # With the keytab in its store MIT refreshes the cache from half-life on.
            self.context(gssapi.Credentials(name=self._name, usage="initiate", store=store))
        elif login.source == "password":
            assert login.password is not None
            got = gssapi.raw.acquire_cred_with_password(
                self._name, login.password.get_secret_value().encode(), usage="initiate"
            )
            gssapi.raw.store_cred_into(
                {b"ccache": self._cache}, got.creds, usage="initiate", overwrite=True
            )
        if login.source == "ccache":
            store = {b"ccache": login.ccache.encode()} if login.ccache else None
            creds = gssapi.Credentials(name=self._name, usage="initiate", store=store)
        else:
            # Requests use the cache alone: MIT never refreshes it on the event loop's thread.
            creds = gssapi.Credentials(
                name=self._name, usage="initiate", store={b"ccache": self._cache}
            )
        self.context(creds)  # the service ticket, now: a missing SPN shows at start-up
        return creds, creds.lifetime

    def context(self, creds: gssapi.Credentials) -> tuple[gssapi.SecurityContext, bytes]:
        ctx = gssapi.SecurityContext(name=self.spn, creds=creds, usage="initiate", flags=self.flags)
        return ctx, ctx.step() or b""


def _negotiate_token(offers: Sequence[str]) -> bytes | None:
    """The token of a `Negotiate <base64>` offer; b"" for a bare `Negotiate`; None if absent."""
    for offer in offers:
        scheme, _, value = offer.strip().partition(" ")
        if scheme.lower() != "negotiate":
            continue
        try:
            return base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return b""
    return None


class KerberosAuth:
    """The PI client's Authenticator for `PIDELTA_PI_AUTH=kerberos`."""

    scheme = "kerberos"

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        if settings.krb5_config is not None:
            # MIT Kerberos reads its configuration's path from the environment only: this
            # makes PIDELTA_KRB5_CONFIG work as KRB5_CONFIG does.
            os.environ["KRB5_CONFIG"] = str(settings.krb5_config)
        self.login = Login.from_settings(settings)
        self.tickets = Tickets(self.login)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._pending: OrderedDict[str, tuple[gssapi.SecurityContext, int]] = OrderedDict()
        self._negotiate = False
        self._proven = False
        self._generation = 0
        self._forced_at = -FORCED_RENEW_SECONDS
        self.renewals = 0
        try:
            # At start-up, before anything is written: a wrong setting ends here, exit 2.
            creds, lifetime = self.tickets.acquire()
        except GSSError as exc:
            raise ConfigError(self.login.explain(exc)) from None
        self._install(creds, lifetime)
        log.info(
            "Kerberos: %s tickets for %s, service %s, valid %s",
            self.login.source,
            self.login.who,
            self.login.spn,
            "indefinitely" if lifetime is None else f"{lifetime:.0f} s",
        )

    def __repr__(self) -> str:
        return f"KerberosAuth({self.login!r}, service={self.login.spn!r})"

    def _install(self, creds: gssapi.Credentials, lifetime: float | None) -> None:
        now = self._clock()
        self._creds = creds
        self._generation += 1
        if lifetime is None:
            self._expires_at = self._renew_at = float("inf")
        else:
            self._expires_at = now + lifetime
            self._renew_at = now + max(MIN_RENEW_SECONDS, lifetime * RENEW_FRACTION)

    def _failure(self, exc: GSSError) -> ConfigError | KerberosError:
        line = self.login.explain(exc)
        return KerberosError(line) if self._proven else ConfigError(line)

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        if not self._negotiate:
            return {}
        if self._clock() >= self._renew_at or self._lock.locked():
            await self._renew()
        try:
            ctx, token = self.tickets.context(self._creds)
        except GSSError as exc:
            raise self._failure(exc) from None
        header = "Negotiate " + base64.b64encode(token).decode("ascii")
        self._pending[header] = (ctx, self._generation)
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
        return {"Authorization": header}

    async def refresh(self, session: aiohttp.ClientSession, challenge: Challenge) -> bool:
        token = _negotiate_token(challenge.offers)
        entry = self._pending.pop(challenge.sent, None) if challenge.sent else None
        if token is None:
            return False  # the server does not offer Negotiate: nothing to answer
        if entry is not None and token:
            try:  # a KRB-ERROR from the server names the cause (skew, no key for the SPN)
                entry[0].step(token)
                entry[0].complete  # noqa: B018 - raises what a failed step kept back
            except GSSError as exc:
                raise self._failure(exc) from None
        if challenge.retried:
            return False
        if not challenge.sent:
            self._negotiate = True  # answer the challenge once, with a token
            return True
        generation = entry[1] if entry is not None else self._generation
        if (
            generation == self._generation
            and self._clock() - self._forced_at >= FORCED_RENEW_SECONDS
        ):
            self._forced_at = self._clock()
            await self._renew(fresh=True)
        return True

    def verify(self, sent: str, offers: Sequence[str]) -> str | None:
        entry = self._pending.pop(sent, None) if sent else None
        if entry is None:
            return None
        self._proven = True
        token = _negotiate_token(offers)
        if not token:
            return None  # no mutual-authentication token sent: nothing to check
        ctx = entry[0]
        try:
            ctx.step(token)
            complete = ctx.complete  # raises what a failed step kept back
        except GSSError as exc:
            return (
                f"the server's Kerberos mutual-authentication token for {self.login.spn} does "
                f"not verify ({_library_text(exc)}): it may not be the PI server it claims"
            )
        if not complete:
            return (
                f"the server's Kerberos mutual-authentication token for {self.login.spn} "
                "is incomplete"
            )
        return None

    async def _renew(self, *, fresh: bool = False) -> None:
        """New tickets in a thread, one renewal at a time; a failure while the tickets in
        hand are valid only warns and is tried again at half the time left."""
        generation = self._generation
        async with self._lock:
            # Done by the request that held the lock, or failed and rescheduled by it.
            if self._generation != generation or (not fresh and self._clock() < self._renew_at):
                return
            try:
                creds, lifetime = await asyncio.to_thread(self.tickets.acquire, fresh=fresh)
            except GSSError as exc:
                now = self._clock()
                left = self._expires_at - now
                if left <= MIN_RENEW_SECONDS:
                    raise self._failure(exc) from None
                self._renew_at = now + max(MIN_RENEW_SECONDS, left / 2)
                log.warning(
                    "Kerberos renewal failed, the tickets in hand stay valid %.0f s: %s",
                    left,
                    self.login.explain(exc),
                )
                return
            before = self._expires_at
            self._install(creds, lifetime)
            self.renewals += 1
            if lifetime is not None and self._expires_at <= before + MIN_RENEW_SECONDS:
                log.warning(
                    "Kerberos: the tickets of %s were not renewed, valid %.0f s more (%s)",
                    self.login.who,
                    lifetime,
                    "renew the ticket cache" if self.login.source == "ccache" else "the KDC",
                )
            else:
                log.info("Kerberos tickets renewed for %s, valid %s s", self.login.who, lifetime)

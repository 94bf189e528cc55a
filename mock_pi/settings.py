"""mock-pi settings: `MOCK_PI_` environment variables, command-line flags override."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mock_pi.clock import Clock, clock_from, parse_start

# Appended kinds draw after the older ones, so an older spec meets the same faults.
FAULT_KINDS = ("503", "429", "500", "reset", "slow", "truncate", "badjson")


class MockSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MOCK_PI_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8440, ge=0, le=65535)
    tag_count: int = Field(default=1000, ge=1, le=5_000_000)
    seed: int = 42
    clock_start: str | None = Field(
        default=None,
        description=(
            "ISO 8601 time with its zone: the server's clock starts there and runs in real "
            "time (every now: * time strings, visibility, late values, updates, event "
            "frames, the archive's start); default the real clock"
        ),
    )

    @field_validator("clock_start")
    @classmethod
    def _clock_start(cls, value: str | None) -> str | None:
        if value is not None:
            parse_start(value)
        return value

    def clock(self) -> Clock:
        """The server's clock: the real one, or one running from CLOCK_START."""
        return clock_from(self.clock_start)

    history_days: float = Field(default=30, gt=0)
    auth: Literal["none", "basic", "bearer", "kerberos"] = "none"
    username: str = "pi"
    password: SecretStr = SecretStr("pi")
    token: SecretStr = SecretStr("token")
    keytab: Path | None = Field(
        default=None,
        validate_default=True,
        description="service keytab for auth=kerberos (HTTP Negotiate)",
    )
    kerberos_principal: str | None = Field(
        default=None, description="service principal for auth=kerberos; HTTP/<host> if unset"
    )
    faults: str = Field(
        default="",
        description=(
            "comma list of kind=rate: 503, 429, 500, reset, slow, truncate, badjson "
            "(a 200 whose body is not JSON)"
        ),
    )
    late_fraction: float = Field(default=0.0, ge=0, le=1)
    late_seconds: float = Field(default=300.0, ge=0)
    scan_scale: float = Field(
        default=1.0,
        ge=1,
        description=(
            "multiplies every point's scan period (1-60 s): fewer values per day with the "
            "same value kinds, so a long range stays testable; values remain a pure "
            "function of (seed, tag, timestamp, settings)"
        ),
    )
    bad_fraction: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description=(
            "share of recorded values served malformed, chosen from (seed, tag, timestamp): "
            "a list or an object without Name as the value, a number where a state or "
            "string belongs, the strings NaN/Infinity/-Infinity on numeric points, a "
            "missing or malformed Timestamp, a missing Value, a bare value instead of an "
            "object; `mock_pi.truth` tells which and how a client should treat them"
        ),
    )
    # Server limits, as the PI Web API configuration names them.
    max_returned_items_per_call: int = Field(default=150_000, ge=1)
    rate_limit: int = Field(default=1000, ge=0, description="requests per second; 0 disables")
    max_url_bytes: int = Field(default=16_384, ge=256)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    csrf: bool = True
    marker_retention: float = Field(default=600.0, gt=0, description="seconds a marker lives")
    edit_fraction: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description=(
            "share of values (alone at their timestamp, well-formed, not system states) "
            "replaced by another value CHANGE_SECONDS after their timestamp, chosen from "
            "(seed, tag, timestamp)"
        ),
    )
    delete_fraction: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of such values removed CHANGE_SECONDS after their timestamp",
    )
    change_seconds: float = Field(
        default=120.0, ge=0, description="how long after its timestamp a value is edited/deleted"
    )
    updates: bool = Field(
        default=True,
        description=(
            "serve stream updates (/streamsets/updates); false answers 404 there, as a "
            "PI Web API without the feature does"
        ),
    )

    @field_validator("delete_fraction")
    @classmethod
    def _changes(cls, value: float, info: ValidationInfo) -> float:
        if value + info.data.get("edit_fraction", 0.0) > 1:
            raise ValueError("EDIT_FRACTION + DELETE_FRACTION must not exceed 1")
        return value

    af_version: int = Field(default=0, ge=0, description="starting AF hierarchy version")
    ef_slot_seconds: float = Field(
        default=600.0, ge=0.05, description="event frame time slot; durations scale with it"
    )
    ef_per_slot: int = Field(default=3, ge=1, le=1000, description="event frames per slot")
    point_changes: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of points renamed, re-unit-ed, or deleted and re-created over time",
    )
    point_change_seconds: float = Field(
        default=86_400.0, ge=1, description="period of a changing point's changes"
    )

    @field_validator("faults")
    @classmethod
    def _faults(cls, value: str) -> str:
        parse_faults(value)
        return value

    @field_validator("keytab")
    @classmethod
    def _keytab(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if info.data.get("auth") == "kerberos" and (value is None or not value.is_file()):
            raise ValueError("auth=kerberos needs the service keytab file")
        return value

    @property
    def service_principal(self) -> str:
        return self.kerberos_principal or f"HTTP/{self.host}"


def parse_faults(spec: str) -> dict[str, float]:
    """`503=0.05,429=0.05,reset=0.01` -> {kind: probability}; raises ValueError."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, sep, rate = part.partition("=")
        if not sep or kind not in FAULT_KINDS:
            raise ValueError(f"bad fault {part!r}: use kind=rate with kind in {FAULT_KINDS}")
        prob = float(rate)
        if not 0 <= prob <= 1:
            raise ValueError(f"bad fault {part!r}: rate must be in [0, 1]")
        out[kind] = prob
    return out

"""Injected faults (`MOCK_PI_FAULTS`), drawn so that a run can be repeated.

Request number n (counted from 1 over every request the faults apply to) draws from
`random.Random(mix(seed, "fault", n))`: one uniform number per fault kind, always in the
order of `FAULT_KINDS`, so that the draw of one kind never depends on the rate of another.
Same seed, same faults and the same order of requests give the same faults.

Several kinds may hit one request: `slow` delays whatever happens next; of the others the
first in `TERMINAL_ORDER` wins (a reset hides a 503, a 503 hides a truncation). `badjson`
replaces a 200 body with `BROKEN_JSON`, complete and with the right length: a client must
reject it by parsing, not by a short read.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from mock_pi.catalog import mix
from mock_pi.settings import FAULT_KINDS, parse_faults

CONTRACT_KINDS = ("503", "429", "500", "reset", "slow", "truncate")
TERMINAL_ORDER = ("reset", "503", "429", "500", "truncate", "badjson")
SLOW_SECONDS = 2.0
RETRY_AFTER_SECONDS = 1
SERVICE_UNAVAILABLE = "The service is unavailable."
INTERNAL_ERROR = "An error has occurred."
# A .NET serializer's NaN literal and a trailing comma: invalid JSON, as a broken proxy or
# a buggy serializer sends it.
BROKEN_JSON = b'{"Links":{},"Items":[{"Timestamp":"2026-01-01T00:00:00Z","Value":NaN,}'


@dataclass(frozen=True, slots=True)
class Draw:
    """What one request meets: an optional delay and at most one terminal fault."""

    sequence: int
    slow: bool
    terminal: str | None


@dataclass
class FaultInjector:
    """Draws faults per request and counts the ones actually injected."""

    seed: int
    rates: dict[str, float]
    sequence: int = 0
    injected: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The contract's kinds are always reported; a later kind only when it is configured.
        self.injected = {
            kind: 0 for kind in FAULT_KINDS if kind in CONTRACT_KINDS or kind in self.rates
        }

    @classmethod
    def from_spec(cls, seed: int, spec: str) -> FaultInjector:
        return cls(seed, parse_faults(spec))

    @property
    def active(self) -> bool:
        return any(rate > 0 for rate in self.rates.values())

    def draw(self) -> Draw:
        self.sequence += 1
        rng = random.Random(mix(self.seed, "fault", self.sequence))
        hits = {kind for kind in FAULT_KINDS if rng.random() < self.rates.get(kind, 0.0)}
        terminal = next((kind for kind in TERMINAL_ORDER if kind in hits), None)
        return Draw(self.sequence, "slow" in hits, terminal)

    def record(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1

    def snapshot(self) -> dict[str, object]:
        """The body of `GET /piwebapi/mock/faults`."""
        return {
            "Seed": self.seed,
            "Rates": dict(self.rates),
            "Requests": self.sequence,
            "Injected": dict(self.injected),
        }

"""Graceful stop: SIGTERM/SIGINT ask the worker to stop taking batches, flush and exit 0.

Why an event and not an exception: a signal may arrive in the middle of a Delta commit;
raising there would leave a planned batch unfinished (harmless, it is re-run on start, but
slower). The pipeline checks `stopping` between batches and sleeps with `wait`, so it wakes
at once. A second signal means "now": the default handler comes back and ends the process.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress

log = logging.getLogger("pidelta.lifecycle")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Lifecycle:
    """Stop flag of one worker, set by a signal or by the pipeline itself."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.reason = ""

    @property
    def stopping(self) -> bool:
        return self._event.is_set()

    @property
    def stop_event(self) -> asyncio.Event:
        """Set once a stop is asked; the PI client's retry waits end on it."""
        return self._event

    def stop(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            log.info("stopping: %s", reason)
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when a stop was asked meanwhile."""
        if seconds > 0 and not self._event.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), seconds)
        return self._event.is_set()

    @contextmanager
    def signals(self) -> Iterator[None]:
        """Install SIGTERM/SIGINT handlers on the running loop for the block's duration."""
        loop = asyncio.get_running_loop()

        def handle(signum: int) -> None:
            name = signal.Signals(signum).name
            if self.stopping:
                log.warning("%s again: exiting now", name)
                for sig in _SIGNALS:
                    loop.remove_signal_handler(sig)
                signal.raise_signal(signum)
                return
            self.stop(f"{name} received; flushing")

        for sig in _SIGNALS:
            loop.add_signal_handler(sig, handle, sig)
        try:
            yield
        finally:
            for sig in _SIGNALS:
                loop.remove_signal_handler(sig)

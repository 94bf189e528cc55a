"""Puts a test's subprocess on the test's simulated clock (tests/conftest.py `SimClock`).

Python imports `sitecustomize` at start-up from PYTHONPATH; `SimClock.process_env` puts
this folder there with SIMCLOCK_OFFSET, the seconds to add to the wall clock. time-machine
moves Python's wall clock only (time.time, datetime.now, ...): monotonic time, sleeps and
timeouts stay real, which libfaketime 0.9.10 could not do (with the monotonic clock left
real, every `time.sleep` failed with EINVAL; with it faked, timed lock waits hung).
"""

import os

_offset = os.environ.get("SIMCLOCK_OFFSET")
if _offset:
    import time

    import time_machine

    time_machine.travel(time.time() + int(_offset), tick=True).start()
    # A ticking travel starts counting at its first read, not at `start()`: read it now,
    # or this process's clock lags by however long it runs before reading the time (a
    # mock-pi that imported for half a second served values half a second behind a worker).
    time.time()

import signal
import sys

# SIGTERM while still importing (nothing is written yet) ends with 0 like a later one does;
# the worker's own handlers take over once its event loop runs.
signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))

from service.cli import console  # noqa: E402

console()

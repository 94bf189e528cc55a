import signal
import sys

if __name__ == "__main__":
    # SIGTERM while still importing (nothing is written yet) ends with 0 like a later one
    # does; the worker's own handlers take over once its event loop runs. Spawned decode
    # processes import this module under another name and keep the default.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))

from service.cli import main

if __name__ == "__main__":  # decode processes are spawned and import this module again
    sys.exit(main())

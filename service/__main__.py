import sys

from service.cli import main

if __name__ == "__main__":  # decode processes are spawned and import this module again
    sys.exit(main())

import sys

from mock_pi.cli import main

sys.exit(main())

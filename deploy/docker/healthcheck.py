"""Container HEALTHCHECK: GET /healthz on the worker's metrics port with the stdlib only.

python:3.11-slim ships no curl or wget, and the check must not depend on the pidelta
package importing cleanly, so this file is copied next to the wheel and run with the
image's interpreter. Exit 0 when /healthz answers 200, 1 otherwise (Docker's contract).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("PIDELTA_METRICS_PORT", "9464")
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

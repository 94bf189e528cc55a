"""moto's S3 server with conditional writes made atomic, as S3's are.

moto checks `If-None-Match: *` (and `If-Match`) and then stores the object in two steps on
a threaded server, so two racing PUTs of one key can both pass the check: with 8 writers,
1 key in 200 had two winners. Two shards committing the same Delta log version would then
both "win", and one commit silently replaces the other; real S3 refuses the second with
412. Holding one lock over each conditional write makes check and store one step, so the
drills and tests judge pidelta, not the emulator. Run as `python -m tests.storage.moto_server
-H 127.0.0.1 -p PORT`, with moto.server's own flags.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from typing import Any

from moto.s3.responses import S3Response
from moto.server import main

_WRITE = threading.Lock()


def _atomic(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(self: S3Response, *args: Any, **kwargs: Any) -> Any:
        with _WRITE:
            return method(self, *args, **kwargs)

    return locked


S3Response.put_object = _atomic(S3Response.put_object)  # type: ignore[method-assign]
S3Response._key_response_post = _atomic(S3Response._key_response_post)  # type: ignore[method-assign]

if __name__ == "__main__":
    main(sys.argv[1:])

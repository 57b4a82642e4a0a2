"""``moto_server`` with its requests handled one at a time: run as ``python _moto_serialised.py
-H 127.0.0.1 -p PORT`` (moto_server's own options).

Why: moto checks an S3 conditional write (``If-None-Match``/``If-Match``) and then writes, with
no lock between, on a threaded server; two racing writers can both pass the check (measured
here: 2 of 40 six-way races for a fresh lease had two winners). Real S3 makes the check and the
write atomic (the loser gets 412 or 409), which is what the shard leases rely on. A lock around
the application restores that; connections are still served by threads."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

import moto.server


class _Serialised:
    """A WSGI application that lets one request in at a time (moto builds whole responses)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self.lock:
            return list(self.app(environ, start_response))


def main() -> None:
    run_simple = moto.server.run_simple

    def serialised(host: str, port: int, app: Any, **options: Any) -> None:
        run_simple(host, port, _Serialised(app), **options)

    moto.server.run_simple = serialised  # type: ignore[assignment]
    moto.server.main(sys.argv[1:])


if __name__ == "__main__":
    main()

"""The tests' HTTP servers, each served on a daemon thread."""

from __future__ import annotations

import threading
from typing import Any

#: how often ``serve_forever`` looks for ``shutdown()``: its default, 0.5 s, would add up
#: to half a second to every teardown
POLL_S = 0.05


def serve_in_thread(server: Any, name: str | None = None) -> threading.Thread:
    """Start ``server.serve_forever`` on a daemon thread; ``server.shutdown()`` stops it."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": POLL_S}, name=name, daemon=True
    )
    thread.start()
    return thread

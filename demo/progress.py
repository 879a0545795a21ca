"""One live status line on stderr (rewritten in place on a terminal)."""

from __future__ import annotations

import threading
import time
from typing import TextIO

__all__ = ["LiveLine"]


class LiveLine:
    """Counters shown as ``replay 12,000/42,000 points | 9,800 pts/s | anomalies 21 | alerts 20``.

    A ticker thread redraws the line every ``interval`` s on a terminal; elsewhere (CI
    logs) it prints a plain line every ``plain_interval`` s.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        total: int,
        interval: float = 0.25,
        plain_interval: float = 5.0,
        clock=time.monotonic,
    ) -> None:
        self.stream = stream
        self.total = total
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.interval = interval if self.tty else plain_interval
        self.clock = clock
        self.scored = 0
        self.anomalies = 0
        self.alerts_posted = 0
        self.alerts_failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = clock()
        self._last = (self._started, 0)
        self._rate = 0.0
        self._width = 0

    def add_alert(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self.alerts_posted += 1
            else:
                self.alerts_failed += 1

    def text(self) -> str:
        now = self.clock()
        t_last, n_last = self._last
        if now - t_last >= 0.5:
            self._rate = (self.scored - n_last) / (now - t_last)
            self._last = (now, self.scored)
        failed = f" ({self.alerts_failed} failed)" if self.alerts_failed else ""
        return (
            f"replay {self.scored:,}/{self.total:,} points | {self._rate:,.0f} pts/s | "
            f"anomalies {self.anomalies:,} | alerts posted {self.alerts_posted:,}{failed} | "
            f"{now - self._started:.1f} s"
        )

    def draw(self, final: bool = False) -> None:
        line = self.text()
        if self.tty:
            pad = " " * max(0, self._width - len(line))
            self._width = len(line)
            self.stream.write("\r" + line + pad + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.draw()

    def start(self) -> LiveLine:
        self._started = self.clock()
        self._last = (self._started, 0)
        self._thread = threading.Thread(target=self._run, name="demo-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(2.0)
        self._thread = None
        self.draw(final=True)

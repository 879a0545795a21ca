"""Flow control: how many points the agent holds between reading them from Kapacitor and
writing them back, per connection and in total.

Reading is what costs memory, so the bound is applied on the reading side: when a
connection holds its share, its reader stops reading, the socket buffer fills, and
Kapacitor's writes block. That is how a Kapacitor task is meant to be slowed down; the
agent never buffers more than the bound however far the scorer falls behind.
"""

from __future__ import annotations

import threading

__all__ = ["InflightBudget", "adaptive_limit"]


class InflightBudget:
    """Points in flight across every connection of one agent (a shared, bounded count).

    A connection may always hold some points: it waits for the global budget only while
    it already holds points itself, so one connection stuck behind a peer that does not
    read cannot starve the others forever (their overshoot is one read each).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"in-flight limit must be at least 1, got {limit}")
        self.limit = limit
        #: a reader held by the total bound resumes once the total is down to this
        self.resume_total = (limit * 3) // 4
        self.cond = threading.Condition()
        self.total = 0
        self.waiting = 0  # readers waiting for room

    def add(self, n: int) -> None:
        with self.cond:
            self.total += n

    def release(self, n: int) -> None:
        with self.cond:
            self.total -= n
            if self.waiting and self.total <= self.resume_total:
                self.cond.notify_all()

    def __repr__(self) -> str:
        return f"InflightBudget({self.total}/{self.limit})"


def adaptive_limit(
    rate: float | None, *, drain_seconds: float, max_batch: int, ceiling: int
) -> int:
    """Points one connection may hold: about ``drain_seconds`` of scoring at the measured
    ``rate`` (points/s), never below two micro-batches (batching needs them) nor above
    ``ceiling``. With no measurement yet, the ceiling."""
    if rate is None or rate <= 0:
        return ceiling
    floor = min(ceiling, max(64, 2 * max_batch))
    return max(floor, min(ceiling, int(rate * drain_seconds)))

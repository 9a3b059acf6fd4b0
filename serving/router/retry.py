"""The retry budget: retries may add only a share of the recent requests, so a sick cloud cannot cause a storm.

As in Finagle and Linkerd: over a sliding window (`RETRY_BUDGET_WINDOW_SECONDS`), the retries (and hedges)
sent may not exceed `percent` of the requests received plus `min_per_second` for each second of the
window. The floor lets a quiet router retry its occasional failure; the percentage bounds the extra load
a failing backend can push onto the healthy ones at any request rate.

Only tries that may have reached a backend spend budget: a retry after a failed connect sends the
request for the first time, adding no load anywhere, so the proxy does not ask the budget for it.
"""

from __future__ import annotations

from serving.router.constants import RETRY_BUDGET_WINDOW_SECONDS

__all__ = ["RetryBudget"]


class RetryBudget:
    """Counts requests and retries per second over a sliding window; `try_spend` says whether one more fits."""

    __slots__ = ("_second", "_window", "min_per_second", "percent", "requests", "retries")

    def __init__(self, percent: float, min_per_second: float, window_seconds: int = RETRY_BUDGET_WINDOW_SECONDS):
        self.percent = percent
        self.min_per_second = min_per_second
        self._window = window_seconds
        self.requests = [0] * window_seconds  # one bucket per second, indexed by second % window
        self.retries = [0] * window_seconds
        self._second = 0

    def record_request(self, now: float) -> None:
        """Count one client request received at `now`."""
        second = int(now)
        if second != self._second:
            self._advance(second)
        self.requests[second % self._window] += 1

    def try_spend(self, now: float) -> bool:
        """Count one retry at `now` if the budget allows it; False (nothing counted) if it is spent."""
        second = int(now)
        if second != self._second:
            self._advance(second)
        if sum(self.retries) >= self.allowance():
            return False
        self.retries[second % self._window] += 1
        return True

    def allowance(self) -> float:
        """Retries the window allows, spent ones included."""
        return self.min_per_second * self._window + self.percent / 100.0 * sum(self.requests)

    def snapshot(self, now: float) -> dict[str, float]:
        """The window's figures, for the status endpoint."""
        second = int(now)
        if second != self._second:
            self._advance(second)
        return {
            "window_seconds": self._window,
            "requests": sum(self.requests),
            "retries": sum(self.retries),
            "allowed": self.allowance(),
        }

    def _advance(self, second: int) -> None:
        # Empty the buckets of the seconds that passed since the last call (all of them after a long gap).
        for stale in range(self._second + 1, min(second, self._second + self._window) + 1):
            self.requests[stale % self._window] = 0
            self.retries[stale % self._window] = 0
        self._second = second

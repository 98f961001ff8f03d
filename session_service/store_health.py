"""Whether the session store can write, decided from the outcome of each batch.

A pure state object, fed by the writer thread: the store is *failing* from a batch of
which nothing could be written until a batch (or a probe) is written again. A batch in
which only some writes failed leaves the store healthy (one bad write is not a bad
disk) but its losses are reported too. Reports are rate-limited: one when an episode
begins, one every ``report_every`` seconds while it lasts, and a summary when it ends,
never one line per write.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto


class Report(Enum):
    """What the writer must log (and signal) after a batch."""

    NONE = auto()
    FAILING = auto()  # writes started to fail: health turns NOT_SERVING
    STILL_FAILING = auto()  # a periodic reminder with the losses so far
    DROPPED = auto()  # some writes of a batch that was otherwise written were lost
    RECOVERED = auto()  # writes work again: health turns SERVING


@dataclass(slots=True)
class WriteHealth:
    """The state of the store's writes; every field is for reports and metrics."""

    report_every: float = 60.0
    ok: bool = True
    #: When the current failure episode began (``None`` when healthy).
    failing_since: float | None = None
    #: Writes lost in the current episode (or the last one, once it ended).
    lost_in_episode: int = 0
    #: Writes lost since the store was opened.
    lost_total: int = 0
    last_error: str = ""
    _reported_at: float = float("-inf")

    def batch_done(self, written: int, failed: int, now: float, error: str = "") -> Report:
        """Take the outcome of one batch (``written`` and ``failed`` writes)."""
        if failed:
            self.lost_in_episode += failed
            self.lost_total += failed
            self.last_error = error or self.last_error
        if failed and not written:
            if self.ok:
                self.ok = False
                self.failing_since = now
                self.lost_in_episode = failed
                return self._reported(Report.FAILING, now)
            if now - self._reported_at >= self.report_every:
                return self._reported(Report.STILL_FAILING, now)
            return Report.NONE
        if not self.ok:
            self.ok = True
            return self._reported(Report.RECOVERED, now)
        if failed and now - self._reported_at >= self.report_every:
            return self._reported(Report.DROPPED, now)
        return Report.NONE

    def probe_failed(self, now: float) -> Report:
        """A probe of a failing store failed too: no record was lost by it."""
        if now - self._reported_at >= self.report_every:
            return self._reported(Report.STILL_FAILING, now)
        return Report.NONE

    def message(self, report: Report, path: str, writes: str, error: str, now: float) -> str:
        """The log line of ``report``; ``writes`` names the kinds of writes that failed."""
        lasted = now - (self.failing_since or now)
        if report is Report.FAILING:
            return (f"session store {path}: writes fail, records are being lost ({writes}: "
                    f"{error}); health NOT_SERVING until a write succeeds")
        if report is Report.STILL_FAILING:
            return (f"session store {path}: writes still fail after {lasted:.0f}s, "
                    f"{self.lost_in_episode} write(s) lost ({self.last_error})")
        if report is Report.DROPPED:
            return (f"session store {path}: write(s) dropped ({writes}: {error}); "
                    f"{self.lost_total} lost since start")
        return (f"session store {path}: writes work again after {lasted:.1f}s; "
                f"{self.lost_in_episode} write(s) were lost (last error {self.last_error}); "
                "health SERVING")

    def _reported(self, report: Report, now: float) -> Report:
        self._reported_at = now
        return report

"""One progress line for the batch: drives and frames done, throughput and time left (tqdm)."""

from __future__ import annotations

import sys
import time


class ProgressLine:
    """``drives 3/8 ok 3 failed 0 | 1234/5000 frames | 41.2 frames/s | left 01:31``.

    The frame total counts the drives whose length is known (opened ones that report it); drives not
    yet opened count as the mean of the known ones, so the estimate firms up as drives start.
    """

    def __init__(self, drives: int, *, enabled: bool = True) -> None:
        self.n = drives
        self.ok = self.failed = self.skipped = 0
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=0, unit="frame", file=sys.stderr, dynamic_ncols=True, leave=True,
                            bar_format="{desc} | {n_fmt}/{total_fmt} frames | {rate_fmt} | left {remaining}")
            self._desc()

    def _desc(self) -> None:
        done = self.ok + self.failed + self.skipped
        self.bar.set_description_str(f"drives {done}/{self.n} (ok {self.ok}, failed {self.failed}, "
                                     f"skipped {self.skipped})", refresh=False)

    def drive_done(self, index: int, result: dict) -> None:
        status = result["status"]
        if status == "failed":
            self.failed += 1
        elif status == "skipped":
            self.skipped += 1
        else:
            self.ok += 1
        if self.bar is not None:
            self._desc()
            self.bar.refresh()

    def frames(self, done: dict[int, int], totals: dict[int, int | None]) -> None:
        if self.bar is None:
            return
        known = [t for t in totals.values() if t]
        finished = self.ok + self.failed + self.skipped
        mean = sum(known) / len(known) if known else 0
        unknown = max(0, self.n - finished - len(known))
        frames = sum(done.values())
        total = int(sum(known) + mean * unknown)
        self.bar.total = max(total, frames)
        self.bar.update(frames - self.bar.n)
        self._desc()
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

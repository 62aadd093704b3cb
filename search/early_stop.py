"""Successive halving (ASHA style) on validation accuracy during proxy training.

Rungs sit at ``grace * rate**k`` epochs. A trial reaching a rung goes on only if its accuracy there is
among the best ``1/rate`` of all accuracies recorded at that rung so far; with fewer than ``rate``
records a rung lets everyone through. Decisions are asynchronous: nobody waits for a rung to fill.
"""

from __future__ import annotations

from collections.abc import Callable


class SuccessiveHalving:
    def __init__(
        self,
        *,
        grace: int,
        rate: int,
        max_epochs: int,
        history: dict[int, list[float]] | None = None,
    ):
        self.rate = rate
        self.rungs: list[int] = []
        r = grace
        while r < max_epochs:
            self.rungs.append(r)
            r *= rate
        self.history: dict[int, list[float]] = {k: list(v) for k, v in (history or {}).items()}

    def should_stop(self, epoch: int, accuracy: float) -> bool:
        if epoch not in self.rungs:
            return False
        seen = self.history.setdefault(epoch, [])
        seen.append(accuracy)
        keep = len(seen) // self.rate
        if keep == 0:
            return False
        threshold = sorted(seen, reverse=True)[keep - 1]
        return accuracy < threshold

    def reporter(self, record: dict[int, float]) -> Callable[[int, float], bool]:
        """A ``report(step, value)`` callback for training; ``record`` collects this trial's rung values."""

        def report(epoch: int, accuracy: float) -> bool:
            if epoch in self.rungs:
                record[epoch] = accuracy
            return self.should_stop(epoch, accuracy)

        return report

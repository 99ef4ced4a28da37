"""What the learning task did, for `huracan run --until-end`'s summary and for tests."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class LearningStats:
    learned: int = 0
    new_patterns: int = 0
    tracked: int = 0
    wins_analysed: int = 0
    losses_analysed: int = 0
    failed: int = 0  # trades whose analysis raised (retried by the next process)
    failed_passes: int = 0
    rebuilt_trades: int = 0
    rebuild_s: float = 0.0
    loss_reasons: dict[str, int] = field(default_factory=dict)

    def summary(self, *, patterns: int) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.loss_reasons.items(), key=lambda kv: -kv[1]))
        return (
            f"learning: {self.learned} trades learned into {patterns} patterns ({self.new_patterns} new), "
            f"{self.tracked} post-exit rows, {self.wins_analysed} wins and {self.losses_analysed} losses "
            f"analysed (loss reasons: {reasons or 'none'}); rebuilt {self.rebuilt_trades} trades in "
            f"{self.rebuild_s:.2f} s"
        )

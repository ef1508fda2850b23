"""The learning-rate schedule every distillation uses: linear warm-up, then cosine decay to 10%."""

from __future__ import annotations

import math
from typing import Any, Callable


def warmup_cosine(config: Any) -> Callable[[int], float]:
    """The factor on ``config.learning_rate`` at each step (``config.warmup`` and ``config.steps``)."""
    def factor(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        done = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    return factor

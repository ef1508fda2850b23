"""The accuracy gate, as data: on a named metric, at most this much worse than the reference.

``Gate.parse("perplexity=1%")`` (relative), ``Gate.parse("arc_easy.acc_norm=0.02abs")`` (absolute
points), or ``Gate("perplexity", 0.01)``. Direction comes from the metric: lower perplexity and KL
are better, higher accuracy, BLEU, chrF, F1 are better.
"""

from __future__ import annotations

from dataclasses import dataclass

from slipstream.errors import InvalidConfig
from slipstream.evaluation.tasks import LOWER_IS_BETTER


# What a divergence metric is for the reference itself (it is never scored against itself).
SELF_VALUES = {"kl_mean": 0.0, "top1_agreement": 1.0, "cosine_mean": 1.0, "cosine_min": 1.0, "cosine_p5": 1.0,
               "retrieval_top10": 1.0, "label_agreement": 1.0}


@dataclass(frozen=True)
class Gate:
    metric: str  # "perplexity" or "task.metric" (e.g. "arc_easy.acc_norm")
    max_drop: float
    relative: bool = True

    def __post_init__(self) -> None:
        if self.max_drop < 0:
            raise InvalidConfig(f"gate {self.metric}: max drop must be >= 0, got {self.max_drop}")
        if self.relative and SELF_VALUES.get(self.metric) == 0.0:
            raise InvalidConfig(f"gate {self.metric}: the reference's own {self.metric} is 0, so a relative drop "
                                f"means nothing; give it absolute, e.g. {self.metric}=0.01abs")

    @classmethod
    def parse(cls, text: str, default_drop: str | None = None, absolute: bool = False) -> "Gate":
        metric, sep, drop = text.partition("=")
        drop = drop.strip() if sep else (default_drop or "")
        if not metric.strip() or not drop:
            raise InvalidConfig(f"gate {text!r}: expected METRIC=DROP such as perplexity=1% (or --max-drop)")
        return cls(metric.strip(), *parse_drop(drop, absolute))

    def describe(self) -> str:
        return f"{self.metric} at most {self.max_drop:.2%} worse" if self.relative else \
            f"{self.metric} at most {self.max_drop:.3g} worse (absolute)"

    @property
    def lower_is_better(self) -> bool:
        return self.metric.rsplit(".", 1)[-1] in LOWER_IS_BETTER

    def drop(self, reference: float, candidate: float) -> float:
        """How much worse the candidate is (negative: better), relative or absolute."""
        worse = candidate - reference if self.lower_is_better else reference - candidate
        return worse / abs(reference) if self.relative else worse

    def check(self, reference: float, candidate: float) -> "GateResult":
        d = self.drop(reference, candidate)
        return GateResult(self, reference, candidate, d, d <= self.max_drop + 1e-12)


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    reference: float
    candidate: float
    drop: float
    passed: bool

    def message(self) -> str:
        unit = (lambda v: f"{v:+.2%}") if self.gate.relative else (lambda v: f"{v:+.4g}")
        verdict = "passes" if self.passed else f"fails by {unit(self.drop - self.gate.max_drop).lstrip('+')}"
        return (f"{self.gate.metric}: {self.candidate:.4g} vs reference {self.reference:.4g}, "
                f"{unit(self.drop)} worse (allowed {unit(self.gate.max_drop).lstrip('+')}): {verdict}")

    def to_dict(self) -> dict:
        return {"metric": self.gate.metric, "max_drop": self.gate.max_drop, "relative": self.gate.relative,
                "reference": self.reference, "candidate": self.candidate, "drop": self.drop, "passed": self.passed}


def parse_drop(text: str, absolute: bool = False) -> tuple[float, bool]:
    """``1%`` -> (0.01, relative); ``0.02abs`` -> (0.02, absolute); ``0.01`` -> relative unless
    ``absolute``."""
    t = text.strip().lower()
    try:
        if t.endswith("%"):
            return float(t[:-1]) / 100, True
        if t.endswith("abs"):
            return float(t[:-3]), False
        return float(t), not absolute
    except ValueError:
        raise InvalidConfig(f"max drop {text!r}: expected a number, a percentage (1%) or NUMBERabs") from None

"""Sliding-window perplexity, and KL divergence / top-1 agreement against a reference model.

Windows follow the Hugging Face recipe: windows of ``window`` tokens start every ``stride`` tokens,
and each window scores only the tokens no earlier window scored, so each token is scored once with
up to ``window - stride`` tokens of context. The stride is at most ``window - 1``: a window's first
token has no context inside it, so consecutive windows overlap by at least one token and every token
after the very first is scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Window:
    begin: int
    end: int
    scored: int  # the last ``scored`` tokens of the window are scored


def plan_windows(n_tokens: int, window: int, stride: int) -> list[Window]:
    if window < 2 or not 0 < stride <= window:
        raise ValueError(f"need window >= 2 and 0 < stride <= window (got window={window}, stride={stride})")
    stride = min(stride, window - 1)
    out, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        scored = min(end - prev_end, end - begin - 1)
        if scored > 0:
            out.append(Window(begin, end, scored))
        prev_end = end
        if end == n_tokens:
            break
    return out


@dataclass
class NLLAccumulator:
    """Collects per-token negative log-likelihoods and reports perplexity with a 95% interval."""

    values: list[np.ndarray] = field(default_factory=list)

    def add(self, token_logprobs: np.ndarray) -> None:
        self.values.append(-np.asarray(token_logprobs, dtype=np.float64))

    def result(self) -> dict:
        nll = np.concatenate(self.values) if self.values else np.zeros(0)
        n = int(nll.size)
        mean = float(nll.mean()) if n else float("nan")
        se = float(nll.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        return {
            "perplexity": math.exp(mean),
            "perplexity_ci95": [math.exp(mean - 1.96 * se), math.exp(mean + 1.96 * se)],
            "nll": mean,
            "nll_stderr": se,
            "tokens": n,
        }


@dataclass
class DivergenceAccumulator:
    """KL(reference || candidate) per token and top-1 agreement, on the same scored positions."""

    kl: list[np.ndarray] = field(default_factory=list)
    agree: list[np.ndarray] = field(default_factory=list)

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Both arguments are ``[positions, vocab]`` log-distributions over the same positions."""
        ref = reference.astype(np.float64)
        cand = candidate.astype(np.float64)
        vocab = min(ref.shape[-1], cand.shape[-1])  # engines may pad the vocabulary differently
        ref, cand = ref[:, :vocab], cand[:, :vocab]
        p = np.exp(ref)
        self.kl.append(np.maximum((p * (ref - cand)).sum(-1), 0.0))
        self.agree.append(ref.argmax(-1) == cand.argmax(-1))

    def result(self) -> dict:
        kl = np.concatenate(self.kl) if self.kl else np.zeros(0)
        agree = np.concatenate(self.agree) if self.agree else np.zeros(0, dtype=bool)
        n = int(kl.size)
        return {
            "kl_mean": float(kl.mean()) if n else float("nan"),
            "kl_stderr": float(kl.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
            "kl_p99": float(np.quantile(kl, 0.99)) if n else float("nan"),
            "kl_max": float(kl.max()) if n else float("nan"),
            "top1_agreement": float(agree.mean()) if n else float("nan"),
            "kl_tokens": n,
        }


def scored_rows(window: Window, logprobs: np.ndarray, tokens: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """From a window's full ``[len, vocab]`` log-distributions, the rows that predict the scored
    tokens and the log-probability of each scored token."""
    length = window.end - window.begin
    rows = logprobs[length - window.scored - 1 : length - 1]
    targets = np.asarray(tokens[length - window.scored :], dtype=np.int64)
    return rows, rows[np.arange(len(targets)), targets]


def paired_change(candidate: NLLAccumulator, reference: NLLAccumulator) -> dict:
    """The candidate's perplexity relative to the reference's on the same tokens, with a 95% interval
    from the per-token paired differences (far tighter than comparing two separate intervals)."""
    a = np.concatenate(candidate.values) if candidate.values else np.zeros(0)
    b = np.concatenate(reference.values) if reference.values else np.zeros(0)
    if a.size != b.size or a.size < 2:
        return {}
    d = a - b
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))
    return {"perplexity_ratio": math.exp(mean),
            "perplexity_ratio_ci95": [math.exp(mean - 1.96 * se), math.exp(mean + 1.96 * se)],
            "nll_diff_mean": mean, "nll_diff_stderr": se}

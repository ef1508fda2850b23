"""Optional engine interfaces for serving many requests at once.

The :class:`~slipstream.engines.protocol.Engine` protocol completes whole batches. A server wants
more: requests arrive at any time and leave as soon as they finish. Two optional shapes give it that.

- :class:`Stepper` (iteration-level, continuous batching): sequences are added and removed at any
  time and :meth:`Stepper.step` advances every active sequence by one token. An engine that can do
  this has a ``stepper(...)`` method returning one (see :func:`can_step`).
- :class:`RowCallbackEngine` (whole batches, per-token callbacks): the engine completes a batch in one
  call but reports each token as it is made, and a row can be stopped early. CTranslate2 fits this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from slipstream.engines.protocol import Completion, FinishReason, SamplingParams


@dataclass(frozen=True)
class StepOutput:
    """What one step did to one sequence.

    ``token`` is the new token, or None when the step ended the sequence without one (it produced the
    end-of-sequence token). A non-None ``finish_reason`` means the sequence has left the batch.
    """

    seq_id: int
    token: int | None
    finish_reason: FinishReason | None = None


@runtime_checkable
class Stepper(Protocol):
    """A running batch that sequences join and leave between steps."""

    def add(self, seq_id: int, prompt: Sequence[int], params: SamplingParams) -> None:
        """Queue a sequence; it is prefilled and joins the batch at the next :meth:`step`."""

    def step(self) -> list[StepOutput]:
        """Advance every active sequence by one token (new ones: prefill and first token). A sequence may
        advance by several (prompt-lookup drafts the model agreed with): its outputs come in order, and only
        the last can end it."""

    def remove(self, seq_id: int) -> None:
        """Drop a sequence at once (cancelled, or stopped by a stop string). Unknown ids are ignored."""

    @property
    def active(self) -> int:
        """Sequences added and not yet finished or removed."""

    def stats(self) -> dict[str, int]:
        """Counters for metrics, e.g. ``prefix_hits``, ``prefix_misses``, ``prefix_tokens_reused``."""


TokenCallback = Callable[[int, int], bool]  # (row, token) -> True to stop that row now


@runtime_checkable
class RowCallbackEngine(Protocol):
    """An engine that completes a batch in one call, reporting each token as it is made."""

    def generate_rows(self, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams],
                      on_token: TokenCallback) -> list[Completion]:
        """Complete ``prompts`` with per-row ``params`` that share :func:`batch_key`.

        ``on_token(row, token)`` is called for each generated token (never the end-of-sequence token);
        when it returns True that row stops. Rows may use different ``max_tokens``.
        """


def can_step(engine: Any) -> bool:
    return callable(getattr(engine, "stepper", None))


def batch_key(params: SamplingParams) -> tuple:
    """Requests whose params share this key can run in one whole-batch call (max_tokens may differ)."""
    if params.greedy:
        return ("greedy", params.min_tokens, params.ignore_eos)
    return ("sample", params.temperature, params.top_p, params.top_k, params.seed, params.min_tokens,
            params.ignore_eos)

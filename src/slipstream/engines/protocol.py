"""The one interface every inference engine implements, and the value types it speaks.

Engines work on token ids, so every engine sees exactly the same tokens; text goes through the
variant's own tokenizer (:class:`slipstream.tokenizer.Tokenizer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Literal, Protocol, Sequence, runtime_checkable

import numpy as np

from slipstream.tokenizer import Tokenizer
from slipstream.errors import InvalidConfig

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. ``temperature == 0`` means greedy decoding."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k limit
    seed: int | None = None
    stop: tuple[str, ...] = ()
    min_tokens: int = 0  # do not stop on end-of-sequence before this many tokens
    ignore_eos: bool = False  # never stop on end-of-sequence (benchmarks)
    adapter: str | None = None  # a LoRA adapter the engine has loaded (continuous batching only)

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise InvalidConfig(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise InvalidConfig(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InvalidConfig(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise InvalidConfig(f"top_k must be >= 0, got {self.top_k}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise InvalidConfig(f"min_tokens must be in [0, max_tokens], got {self.min_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    def with_(self, **changes: Any) -> "SamplingParams":
        return replace(self, **changes)


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]  # generated tokens, without the prompt and without the end-of-sequence token
    text: str
    finish_reason: FinishReason
    prompt_tokens: int


@dataclass(frozen=True)
class EngineInfo:
    engine: str
    device: str
    compute_type: str  # what the engine really computes in (may differ from what was asked)
    threads: int
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """Files to tokens. Implementations: transformers (PyTorch), CTranslate2, and more later."""

    name: str
    max_context: int

    @property
    def tokenizer(self) -> Tokenizer: ...

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        """Complete a batch of tokenized prompts."""

    def stream(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[int]:
        """Yield generated token ids one at a time, as the engine produces them."""

    def score(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Log-probability of each token given the tokens before it (``len(seq) - 1`` values each)."""

    def logprobs(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Full next-token log-distributions: one ``[len(seq), vocab]`` float32 array per sequence."""

    def info(self) -> EngineInfo: ...

    def close(self) -> None: ...



@runtime_checkable
class Encoder(Protocol):
    """Token ids to one vector per sequence: embedding models (pooled as the model's sentence-transformers
    pipeline says) and classifiers (their head's logits). Implementations: transformers, CTranslate2's
    ``Encoder``, ONNX Runtime (:mod:`slipstream.engines.encoders`)."""

    name: str
    task: str  # "embedding" | "classification"
    max_context: int  # the longest sequence it takes, in tokens
    dimensions: int  # the embedding's size

    @property
    def tokenizer(self) -> Tokenizer: ...

    def embed(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """``[len(sequences), dimensions]`` float32 sentence embeddings (L2-normalised where the model says)."""

    def classify(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """``[len(sequences), labels]`` float32 logits of a classification head (classification models)."""

    def info(self) -> EngineInfo: ...

    def close(self) -> None: ...

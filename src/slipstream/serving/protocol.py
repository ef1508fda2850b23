"""Request and response bodies of the OpenAI-compatible endpoints (OpenAI's field names).

Unknown request fields are refused (400 naming the field) rather than silently ignored. ``top_k``,
``min_tokens`` and ``ignore_eos`` are the usual extensions (vLLM and TGI take them too); send them
with the openai client's ``extra_body``.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

# OpenAI's seed is any 64-bit integer (engines take 32 bits of it: slipstream.serving.params)
INT64 = 2 ** 63


def _surrogate(data: Any) -> str | None:
    """The dotted path of the first string (or key) in ``data`` holding an unpaired UTF-16 surrogate.
    Iterative: a body nested as deep as the JSON parser allows must not overflow the stack here."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                # the path itself may hold the surrogate (a key): escaped so the message can be sent
                return (path or "body").encode("utf-8", "backslashreplace").decode()
        elif isinstance(value, dict):
            for k, v in value.items():
                stack += [(f"{path}.{k}".lstrip("."), v), (f"{path}.{k}".lstrip("."), k)]
        elif isinstance(value, list):
            stack.extend((f"{path}.{i}".lstrip("."), v) for i, v in enumerate(value))
    return None


_UNSUPPORTED = {"minimum": 0, "maximum": 0}


class _Body(BaseModel):
    # strict, as OpenAI is: "5" is not a number, 1.0 not an integer, "yes" not a boolean (400 naming the field)
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _no_surrogates(cls, data: Any) -> Any:
        # JSON's "\ud800" escape decodes to a str no tokenizer or UTF-8 response can hold; refused here, by
        # field, instead of failing later in the tokenizer or in an error message that quotes it
        where = _surrogate(data)
        if where:
            raise ValueError(f"{where} holds an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is not text")
        return data


class _Request(_Body):
    model: str
    max_tokens: Optional[int] = Field(None, ge=0)
    temperature: Optional[float] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    top_k: Optional[int] = Field(None, ge=-1)  # -1 or 0: no limit
    n: Optional[int] = Field(None, ge=1)
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[int] = Field(None, ge=-INT64, lt=INT64)
    stream: bool = False
    stream_options: Optional[dict[str, Any]] = None
    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False
    # accepted for OpenAI's clients, which send them; anything but 0 (or an empty logit_bias) is refused
    # with a 400 saying so (serving.params), and the schema says as much
    presence_penalty: float = Field(0.0, json_schema_extra=_UNSUPPORTED)
    frequency_penalty: float = Field(0.0, json_schema_extra=_UNSUPPORTED)
    logit_bias: Optional[dict[str, float]] = Field(None, json_schema_extra={"maxProperties": 0})
    user: Optional[str] = None

    def stops(self) -> list[str] | None:
        if self.stop is None:
            return None
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


TokenId = Annotated[int, Field(ge=0)]  # below the vocabulary's size too: checked, and written in the schema
TokenIds = Annotated[list[TokenId], Field(min_length=1)]
Text = Annotated[str, Field(min_length=1)]


class CompletionRequest(_Request):
    # a text, texts, token ids, or lists of token ids; none of them empty (an empty text is refused once
    # tokenized: it may still hold a special token)
    prompt: Union[Text, Annotated[list[Text], Field(min_length=1)], TokenIds,
                  Annotated[list[TokenIds], Field(min_length=1)]]
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0)
    best_of: Optional[int] = Field(None, ge=1)
    suffix: Optional[str] = Field(None, json_schema_extra={"maxLength": 0})  # not supported


class EmbeddingRequest(_Body):
    model: str
    # a text, texts, token ids (the model's special tokens included, as its tokenizer's encode gives them), or
    # lists of token ids; none of them empty
    input: Union[Text, Annotated[list[Text], Field(min_length=1)], TokenIds,
                 Annotated[list[TokenIds], Field(min_length=1)]]
    encoding_format: Literal["float", "base64"] = "float"  # base64: each vector's little-endian float32 bytes
    dimensions: Optional[int] = Field(None, ge=1)  # the model's size, or fewer with embeddings.matryoshka
    user: Optional[str] = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: Optional[str] = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "user", "assistant", "tool", "developer"]  # OpenAI's; others are refused
    content: Optional[Union[str, list[ContentPart]]] = None
    name: Optional[str] = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(p.text or "" for p in self.content if p.type == "text")


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0)
    response_format: Optional[dict[str, Any]] = None
    tools: Optional[list[Any]] = Field(None, json_schema_extra={"maxItems": 0})  # not supported
    tool_choice: Optional[Any] = None
    parallel_tool_calls: Optional[bool] = None


# responses --------------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[Optional[float]]
    top_logprobs: list[Optional[dict[str, float]]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: Optional[CompletionLogprobs] = None
    finish_reason: Optional[Literal["stop", "length"]] = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Optional[Usage] = None
    system_fingerprint: Optional[str] = None


# streamed chunks (stream=true): each a server-sent event's data, then data: [DONE] ---------------
class _Chunk(BaseModel):
    model_config = ConfigDict(extra="forbid")  # the schema says exactly what a chunk holds


class CompletionChunkChoice(_Chunk):
    index: int
    text: str
    logprobs: None = None
    finish_reason: Optional[Literal["stop", "length"]] = None


class CompletionChunk(_Chunk):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChunkChoice]  # empty in the last chunk, which carries usage (include_usage)
    usage: Optional[Usage] = None


class ChatDelta(_Chunk):
    role: Optional[Literal["assistant"]] = None
    content: Optional[str] = None


class ChatChunkChoice(_Chunk):
    index: int
    delta: ChatDelta
    logprobs: None = None
    finish_reason: Optional[Literal["stop", "length"]] = None


class ChatCompletionChunk(_Chunk):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Optional[Usage] = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: Optional[list[int]] = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: Optional[list[TokenLogprob]] = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: Optional[str] = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: Optional[ChoiceLogprobs] = None
    finish_reason: Optional[Literal["stop", "length"]] = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Optional[Usage] = None
    system_fingerprint: Optional[str] = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str]  # a string with encoding_format=base64


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "slipstream"
    root: Optional[str] = None
    parent: Optional[str] = None  # a LoRA adapter's base model (vLLM's field)
    max_model_len: Optional[int] = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "stopping"]
    model: str
    queue_depth: int
    running: int


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[Union[str, int]] = None


class ErrorResponse(BaseModel):
    error: ErrorDetail

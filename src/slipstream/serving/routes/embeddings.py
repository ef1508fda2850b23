"""POST /v1/embeddings (embedding models): texts or token ids in, one vector each, as floats or base64.

Mounted on a server whose model is an embedding model, in place of completions and chat; the routes a server's
model cannot answer are refused with a 400 that names its task (:func:`wrong_task`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from slipstream.serving.embeddings import encoded, shorten
from slipstream.serving.errors import ApiError, bad_request
from slipstream.serving.openapi import embedding_responses
from slipstream.serving.protocol import EmbeddingRequest, EmbeddingResponse
from slipstream.serving.routes.common import ClientGone, check_model, count, server, unless_disconnected
from slipstream.serving.scheduler import EMBED

router = APIRouter()


def _inputs(body: EmbeddingRequest, st: Any) -> list[list[int]]:
    """Token ids of each input; a 400 for more inputs than the queue holds, an input past the context or
    token ids outside the vocabulary."""
    value = body.input
    if isinstance(value, str):
        items: list[Any] = [value]
    elif value and all(isinstance(t, int) for t in value):
        items = [value]
    else:
        items = list(value)
    sched = st.scheduler
    capacity = sched.max_batch_size + sched.max_queue
    if len(items) > capacity:  # checked before tokenizing: such a request could never be admitted whole
        raise bad_request(f"{len(items)} inputs in one request; this server takes at most {capacity} "
                          "(max_batch_size plus max_queue)", "input")
    tok, context = st.engine.tokenizer, st.engine.max_context
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            ids = tok.encode(item)
        else:
            ids = list(item)
            if any(t >= tok.vocab_size for t in ids):
                raise bad_request(f"input token ids must be in [0, {tok.vocab_size})", "input")
        if len(ids) > context:
            where = f"input {i}" if len(items) > 1 else "the input"
            raise bad_request(f"{where} has {len(ids)} tokens; this model takes at most {context} tokens per "
                              "input", "input", code="context_length_exceeded")
        out.append(ids)
    # the inputs that must wait count against the queue's token budget: a request past it alone never fits
    waiting = sum(len(ids) + EMBED.max_tokens for ids in out[sched.max_batch_size:])
    if sched.max_queued_tokens is not None and waiting > sched.max_queued_tokens:
        raise bad_request(f"these inputs hold more tokens than this server queues at once "
                          f"({sched.max_queued_tokens}, max_queued_tokens); send fewer or shorter inputs", "input")
    return out


def _dimensions(asked: int | None, size: int, matryoshka: bool) -> int | None:
    """The length to shorten vectors to (None: the model's own)."""
    if asked is None or asked == size:
        return None
    if asked > size:
        raise bad_request(f"dimensions={asked}, but this model's embeddings have {size}", "dimensions")
    if not matryoshka:
        raise bad_request(f"this model's embeddings have {size} dimensions and it is not served as a model "
                          f"trained for shorter ones (embeddings.matryoshka), so dimensions={asked} is refused; "
                          f"leave dimensions out or ask for {size}", "dimensions")
    return asked


@router.post("/v1/embeddings", response_model=EmbeddingResponse, responses=embedding_responses())
async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    st = server(request)
    check_model(request, body.model)
    dims = _dimensions(body.dimensions, st.engine.dimensions, st.settings.embeddings.matryoshka)
    sequences = _inputs(body, st)
    try:
        vectors = await unless_disconnected(request, st.service.embed(sequences))
    except ClientGone:
        count(request, 499)
        return Response(status_code=499)
    if dims is not None:
        vectors = shorten(vectors, dims, normalize=st.service.normalized)
    tokens = sum(len(s) for s in sequences)
    # EmbeddingResponse's shape, built directly: thousands of floats need no validating
    data = [{"object": "embedding", "index": i, "embedding": encoded(v, body.encoding_format)}
            for i, v in enumerate(vectors)]
    count(request, 200)
    return JSONResponse({"object": "list", "data": data, "model": body.model,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def wrong_task(paths: list[str], task: str, serves: str) -> APIRouter:
    """POST ``paths`` answered 400 (``code: model_task``): this server's model is a ``task`` model, which
    answers ``serves``. Not in the schema: there the server documents what it serves."""
    refusals = APIRouter()

    async def refuse(request: Request) -> Response:
        st = server(request)
        article = "an" if task[0] in "aeiou" else "a"
        raise ApiError(400, f"'{st.model_name}' is {article} {task} model: this server answers {serves}, not "
                            f"{request.url.path}", param="model", code="model_task")

    for path in paths:
        refusals.add_api_route(path, refuse, methods=["POST"], include_in_schema=False)
    return refusals

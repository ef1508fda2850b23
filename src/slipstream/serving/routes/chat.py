"""POST /v1/chat/completions: messages through the model's own chat template, streaming or whole."""

from __future__ import annotations

import math
from typing import Any, AsyncIterator

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from slipstream.serving.errors import bad_request
from slipstream.serving.openapi import generation_responses
from slipstream.serving.params import plan
from slipstream.serving.protocol import (AssistantMessage, ChatChoice, ChatCompletionChunk, ChatCompletionRequest,
                                         ChatCompletionResponse, ChoiceLogprobs, TokenLogprob, TopLogprob, Usage,
                                         new_id, now)
from slipstream.serving.routes.common import (ClientGone, check_model, count, server, sse, unless_disconnected,
                                             with_adapter)

router = APIRouter()


def _render(body: ChatCompletionRequest, tokenizer: Any) -> tuple[list[int], str]:
    if not tokenizer.has_chat_template:
        raise bad_request("this model has no chat template; use /v1/completions", "messages")
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    try:
        ids = tokenizer.chat(messages)
    except Exception as exc:  # noqa: BLE001 - a template that refuses these messages (raise_exception)
        raise bad_request(f"the chat template refused these messages: {exc}", "messages") from None
    return ids, "\n".join(f"{m['role']}: {m['content']}" for m in messages)


@router.post("/v1/chat/completions", response_model=None,
             responses=generation_responses(ChatCompletionResponse, ChatCompletionChunk))
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    st = server(request)
    adapter = check_model(request, body.model)
    ids, text = _render(body, st.engine.tokenizer)
    p = with_adapter(plan(body, st.settings, prompt_tokens=len(ids), max_context=st.engine.max_context,
                          vocab_size=st.engine.tokenizer.vocab_size), adapter, scoring=bool(body.logprobs))
    if body.stream and body.logprobs:
        raise bad_request("logprobs with stream=true is not supported; ask without streaming", "logprobs")
    job = await st.service.open("chat", ids, p, semantic_text=text)
    if body.stream:
        count(request, 200)
        return sse(_stream(request, body, job))
    try:
        response = await unless_disconnected(request, _complete(request, body, ids, job))
    except ClientGone:
        count(request, 499)
        return Response(status_code=499)
    finally:
        job.abandon()
    count(request, 200)
    return JSONResponse(response)


async def _complete(request: Request, body: ChatCompletionRequest, prompt: list[int], job: Any) -> dict:
    st = server(request)
    result = await job.result()
    choices = []
    for i, c in enumerate(result.choices):
        lp = None
        if body.logprobs:
            lp = await _logprobs(request, prompt, list(c.token_ids), body.top_logprobs or 0)
        choices.append(ChatChoice(index=i, message=AssistantMessage(content=c.text), logprobs=lp,
                                  finish_reason=c.finish_reason))
    return ChatCompletionResponse(
        id=new_id("chatcmpl"), created=now(), model=body.model, choices=choices,
        usage=Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                    total_tokens=result.prompt_tokens + result.completion_tokens)).model_dump()


async def _logprobs(request: Request, prompt: list[int], generated: list[int], top: int) -> ChoiceLogprobs:
    st = server(request)
    tok = st.engine.tokenizer
    if not generated:
        return ChoiceLogprobs(content=[])
    lp = (await st.service.logprobs([prompt + generated]))[0]

    def entry(t: int, value: float) -> TopLogprob:
        s = tok.decode([int(t)], skip_special_tokens=False)
        return TopLogprob(token=s, logprob=value if math.isfinite(value) else -9999.0, bytes=list(s.encode()))

    content = []
    for k, t in enumerate(generated):
        row = lp[len(prompt) + k - 1]
        e = entry(t, float(row[t]))
        best = np.argsort(-row)[:top] if top else []
        content.append(TokenLogprob(token=e.token, logprob=e.logprob, bytes=e.bytes,
                                    top_logprobs=[entry(int(b), float(row[b])) for b in best]))
    return ChoiceLogprobs(content=content)


async def _stream(request: Request, body: ChatCompletionRequest, job: Any) -> AsyncIterator[dict]:
    st = server(request)
    rid, created = new_id("chatcmpl"), now()

    def chunk(index: int, delta: dict, finish: str | None) -> dict:
        return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": body.model,
                "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    for i in range(job.plan.n):
        yield chunk(i, {"role": "assistant", "content": ""}, None)
    async for d in job.deltas():
        if d.text:
            yield chunk(d.index, {"content": d.text}, None)
        if d.finish_reason:
            yield chunk(d.index, {}, d.finish_reason)
    if body.include_usage() and job.final is not None:
        g = job.final
        yield {"id": rid, "object": "chat.completion.chunk", "created": created, "model": body.model,
               "choices": [], "usage": {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                                        "total_tokens": g.prompt_tokens + g.completion_tokens}}

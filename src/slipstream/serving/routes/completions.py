"""POST /v1/completions: text or token-id prompts, ``echo`` and ``logprobs`` for scoring, streaming.

``echo=True, max_tokens=0 (or 1), logprobs=N`` returns the log-probability of every prompt token
(the first has none) and the top N alternatives, which is what evaluation harnesses (lm-eval's
``local-completions``) use to score answers through a server.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from slipstream.serving.errors import bad_request
from slipstream.serving.generation import Generated
from slipstream.serving.openapi import generation_responses
from slipstream.serving.params import Plan, plan
from slipstream.serving.protocol import (CompletionChoice, CompletionChunk, CompletionLogprobs, CompletionRequest,
                                         CompletionResponse, Usage, new_id, now)
from slipstream.serving.routes.common import (ClientGone, check_model, count, server, sse, unless_disconnected,
                                             with_adapter)

router = APIRouter()


def _prompts(body: CompletionRequest, tokenizer: Any, capacity: int, n: int) -> list[tuple[list[int], str | None]]:
    """(token ids, text if given as text) per prompt."""
    p = body.prompt
    if isinstance(p, str):
        items: list[Any] = [p]
    elif p and all(isinstance(t, int) for t in p):
        items = [p]
    else:
        items = list(p)
    if not items:
        raise bad_request("prompt is empty", "prompt")
    if len(items) * n > capacity:  # checked before tokenizing: such a request could never be admitted whole
        raise bad_request(f"{len(items)} prompts with n={n} ask for {len(items) * n} generations at once; this "
                          f"server holds at most {capacity} (max_batch_size plus max_queue)", "prompt")
    out = []
    for item in items:
        if isinstance(item, str):
            ids, text = tokenizer.encode(item), item
        else:
            ids, text = [int(t) for t in item], None
            vocab = tokenizer.vocab_size
            if any(t < 0 or t >= vocab for t in ids):
                raise bad_request(f"prompt token ids must be in [0, {vocab})", "prompt")
        if not ids:
            raise bad_request("prompt is empty (no tokens)", "prompt")
        out.append((ids, text))
    return out


@router.post("/v1/completions", response_model=None,
             responses=generation_responses(CompletionResponse, CompletionChunk))
async def completions(body: CompletionRequest, request: Request) -> Response:
    st = server(request)
    adapter = check_model(request, body.model)
    tok = st.engine.tokenizer
    sched = st.scheduler
    prompts = _prompts(body, tok, sched.max_batch_size + sched.max_queue,
                       body.n if body.n is not None else st.settings.defaults.n)
    plans = [with_adapter(plan(body, st.settings, prompt_tokens=len(ids), max_context=st.engine.max_context,
                               vocab_size=tok.vocab_size), adapter,
                          scoring=body.logprobs is not None or bool(body.echo)) for ids, _ in prompts]
    if body.stream:
        if len(prompts) > 1:
            raise bad_request("stream=true takes one prompt per request", "prompt")
        if body.logprobs is not None:
            raise bad_request("logprobs with stream=true is not supported; ask without streaming", "logprobs")
        if plans[0].params is None:
            raise bad_request("max_tokens=0 needs stream=false", "max_tokens")
    if body.stream:
        ids, text = prompts[0]
        job = await st.service.open("completions", ids, plans[0], semantic_text=text)
        count(request, 200)
        return sse(_stream(request, body, job, text if text is not None else tok.decode(ids)))
    try:
        response = await unless_disconnected(request, _complete(request, body, prompts, plans))
    except ClientGone:
        count(request, 499)  # nginx's "client closed request": counted, so no request goes missing in /metrics
        return Response(status_code=499)
    count(request, 200)
    return JSONResponse(response)


async def _complete(request: Request, body: CompletionRequest, prompts: list, plans: list[Plan]) -> dict:
    st = server(request)
    tok = st.engine.tokenizer
    jobs: list[Any] = []
    try:
        for (ids, text), p in zip(prompts, plans):
            jobs.append(await st.service.open("completions", ids, p, semantic_text=text) if p.params else None)
        return await _gather(request, body, prompts, plans, jobs)
    finally:
        for job in jobs:
            if job is not None:
                job.abandon()


async def _gather(request: Request, body: CompletionRequest, prompts: list, plans: list[Plan], jobs: list) -> dict:
    st = server(request)
    tok = st.engine.tokenizer
    choices, completion_tokens = [], 0
    for (ids, text), p, job in zip(prompts, plans, jobs):
        result = await job.result() if job else Generated(tuple(), len(ids))
        completion_tokens += result.completion_tokens
        outs = result.choices or [None] * p.n
        prompt_text = text if text is not None else tok.decode(ids)
        for c in outs:
            gen_ids = list(c.token_ids) if c else []
            lp = None
            if body.logprobs is not None:
                lp = await _logprobs(request, ids, gen_ids, body.echo, body.logprobs, prompt_text)
            choices.append(CompletionChoice(
                index=len(choices), text=(prompt_text if body.echo else "") + (c.text if c else ""),
                logprobs=lp, finish_reason=c.finish_reason if c else "length"))
    prompt_tokens = sum(len(ids) for ids, _ in prompts)
    return CompletionResponse(
        id=new_id("cmpl"), created=now(), model=body.model, choices=choices,
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                    total_tokens=prompt_tokens + completion_tokens)).model_dump()


async def _logprobs(request: Request, prompt: list[int], generated: list[int], echo: bool, top: int,
                    prompt_text: str) -> CompletionLogprobs:
    st = server(request)
    tok = st.engine.tokenizer
    seq = prompt + generated
    lp = (await st.service.logprobs([seq]))[0]
    start = 0 if echo else len(prompt)
    piece = lambda t: tok.decode([int(t)], skip_special_tokens=False)  # noqa: E731
    tokens, token_lps, tops, offsets = [], [], [], []
    offset = 0 if echo else len(prompt_text)
    for pos in range(start, len(seq)):
        s = piece(seq[pos])
        tokens.append(s)
        offsets.append(offset)
        offset += len(s)
        if pos == 0:
            token_lps.append(None)
            tops.append(None)
            continue
        row = lp[pos - 1]
        token_lps.append(float(row[seq[pos]]))
        if top > 0:
            best = np.argpartition(-row, top - 1)[:top]
            entry: dict[str, float] = {}
            for t in sorted(best, key=lambda t: -row[t]):
                entry.setdefault(piece(t), float(row[t]))
            tops.append(entry)
        else:
            tops.append({})
    return CompletionLogprobs(tokens=tokens, token_logprobs=token_lps, top_logprobs=tops, text_offset=offsets)


async def _stream(request: Request, body: CompletionRequest, job: Any, prompt_text: str) -> AsyncIterator[dict]:
    st = server(request)
    rid, created = new_id("cmpl"), now()

    def chunk(index: int, text: str, finish: str | None) -> dict:
        return {"id": rid, "object": "text_completion", "created": created, "model": body.model,
                "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish}]}

    if body.echo:
        for i in range(job.plan.n):
            yield chunk(i, prompt_text, None)
    async for d in job.deltas():
        if d.text or d.finish_reason:
            yield chunk(d.index, d.text, d.finish_reason)
    if body.include_usage() and job.final is not None:
        g = job.final
        yield {"id": rid, "object": "text_completion", "created": created, "model": body.model, "choices": [],
               "usage": {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                         "total_tokens": g.prompt_tokens + g.completion_tokens}}

"""From a request's sampling fields to engine :class:`SamplingParams`: defaults, limits, context.

Every way a request can ask for too much ends here as a 400 with a message saying what and why.
"""

from __future__ import annotations

from dataclasses import dataclass

from slipstream.engines.protocol import SamplingParams
from slipstream.serving.errors import bad_request
from slipstream.serving.protocol import ChatCompletionRequest, CompletionRequest, _Request
from slipstream.serving.settings import DeploymentSettings


# Engines take 32-bit seeds (CTranslate2 refuses more, numpy refuses negatives); a request's 64-bit seed is
# taken modulo this, so every seed OpenAI's API allows is a valid one here
SEEDS = 2 ** 32
# a temperature or top_p below this is greedy decoding (vLLM's _SAMPLING_EPS), as it nearly is anyway: logits
# divided by a temperature of 1e-300 overflow to inf and the softmax to nan, and CTranslate2 reads a top_p of
# 5e-324 as 0 and refuses it; either failed the whole engine step, every request in it with a 500
GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class Plan:
    """What to do for one request: engine params (None: score only, no generation), stops, choices."""

    params: SamplingParams | None
    stops: tuple[str, ...]
    n: int


def _unsupported(req: _Request) -> None:
    if req.presence_penalty or req.frequency_penalty:
        raise bad_request("presence_penalty and frequency_penalty are not supported by this server; "
                          "leave them at 0", "presence_penalty")
    if req.logit_bias:
        raise bad_request("logit_bias is not supported by this server", "logit_bias")
    if isinstance(req, CompletionRequest):
        if req.suffix:
            raise bad_request("suffix is not supported by this server", "suffix")
        if req.best_of is not None and req.best_of != (req.n or 1):
            raise bad_request("best_of other than n is not supported by this server", "best_of")
    if isinstance(req, ChatCompletionRequest):
        if req.tools or req.tool_choice not in (None, "none"):
            raise bad_request("tools and tool_choice are not supported by this server", "tools")
        fmt = (req.response_format or {}).get("type", "text")
        if fmt != "text":
            raise bad_request(f"response_format {fmt!r} is not supported by this server", "response_format")


def plan(req: _Request, settings: DeploymentSettings, *, prompt_tokens: int, max_context: int,
         vocab_size: int | None = None) -> Plan:
    """Resolve ``req`` against the deployment's defaults and limits, for a prompt of that length."""
    _unsupported(req)
    d, lim = settings.defaults, settings.limits
    if prompt_tokens >= max_context:
        raise bad_request(f"This model's maximum context length is {max_context} tokens, but the prompt has "
                          f"{prompt_tokens} tokens; shorten the prompt.", "messages" if isinstance(
                              req, ChatCompletionRequest) else "prompt", "context_length_exceeded")
    room = max_context - prompt_tokens
    chat = isinstance(req, ChatCompletionRequest)
    asked = (req.max_completion_tokens or req.max_tokens) if chat else req.max_tokens  # type: ignore[union-attr]
    if asked is None:
        max_tokens = min(lim.max_tokens, room) if chat else min(d.max_tokens, room)
    else:
        max_tokens = asked
    if max_tokens > lim.max_tokens:
        raise bad_request(f"max_tokens is {max_tokens}, above this deployment's limit of {lim.max_tokens}",
                          "max_tokens")
    if max_tokens > room:
        raise bad_request(f"This model's maximum context length is {max_context} tokens. However, you requested "
                          f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} "
                          "for the completion). Please reduce the prompt or max_tokens.", "max_tokens",
                          "context_length_exceeded")
    n = req.n if req.n is not None else d.n
    if n > lim.max_n:
        raise bad_request(f"n is {n}, above this deployment's limit of {lim.max_n}", "n")
    temperature = req.temperature if req.temperature is not None else d.temperature
    if temperature > lim.max_temperature:
        raise bad_request(f"temperature is {temperature}, above this deployment's limit of "
                          f"{lim.max_temperature}", "temperature")
    top_k = req.top_k if req.top_k is not None else d.top_k
    top_k = max(top_k, 0)
    if vocab_size and top_k >= vocab_size:
        top_k = 0  # no limit either way; CTranslate2 fails the whole batch on a top_k above its vocabulary
    if lim.max_top_k and top_k > lim.max_top_k:
        raise bad_request(f"top_k is {top_k}, above this deployment's limit of {lim.max_top_k}", "top_k")
    stops = req.stops()
    stops = tuple(s for s in (stops if stops is not None else d.stop) if s)
    if len(stops) > lim.max_stop:
        raise bad_request(f"at most {lim.max_stop} stop sequences are allowed, got {len(stops)}", "stop")
    _check_logprobs(req, lim.max_logprobs)
    if max_tokens == 0:
        if not (isinstance(req, CompletionRequest) and req.echo):
            raise bad_request("max_tokens must be at least 1 (0 is allowed only with echo, to score the prompt)",
                              "max_tokens")
        return Plan(None, stops, n)
    if req.min_tokens > max_tokens:
        raise bad_request(f"min_tokens ({req.min_tokens}) is above max_tokens ({max_tokens})", "min_tokens")
    seed = req.seed if req.seed is not None else d.seed
    top_p = req.top_p if req.top_p is not None else d.top_p
    if temperature < GREEDY_BELOW or top_p < GREEDY_BELOW:
        temperature, top_p = 0.0, 1.0
    params = SamplingParams(
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
        seed=None if seed is None else seed % SEEDS, min_tokens=req.min_tokens, ignore_eos=req.ignore_eos,
    )
    return Plan(params, stops, n)


def _check_logprobs(req: _Request, most: int) -> None:
    if isinstance(req, CompletionRequest) and req.logprobs is not None and req.logprobs > most:
        raise bad_request(f"logprobs is {req.logprobs}, above this deployment's limit of {most}", "logprobs")
    if isinstance(req, ChatCompletionRequest):
        if req.top_logprobs is not None and req.top_logprobs > most:
            raise bad_request(f"top_logprobs is {req.top_logprobs}, above this deployment's limit of {most}",
                              "top_logprobs")
        if req.top_logprobs and not req.logprobs:
            raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")

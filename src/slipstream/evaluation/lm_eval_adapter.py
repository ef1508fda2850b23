"""lm-evaluation-harness adapter: any slipstream variant, on any engine, as an lm-eval model.

    import lm_eval
    import slipstream.evaluation.lm_eval_adapter  # registers the "slipstream" model type
    lm_eval.simple_evaluate(model="slipstream", model_args="variant=smollm2-135m-ct2-int8", tasks=[...])

or ``slipstream lm-eval VARIANT --tasks arc_easy``. Requests go through the Engine protocol:
``loglikelihood`` scores continuations (tokenized as lm-eval's own HF model does),
``loglikelihood_rolling`` scores whole documents in windows, ``generate_until`` generates greedily.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slipstream.extras import require

lm_eval = require("lm_eval", "lm-eval", "the lm-evaluation-harness adapter")
from lm_eval.api.model import LM  # noqa: E402
from lm_eval.api.registry import register_model  # noqa: E402

from slipstream.engines.loading import open_engine  # noqa: E402
from slipstream.engines.protocol import SamplingParams  # noqa: E402
from slipstream.evaluation.multiple_choice import loglikelihoods  # noqa: E402
from slipstream.evaluation.perplexity import plan_windows  # noqa: E402
from slipstream.store import Store  # noqa: E402


@register_model("slipstream")
class SlipstreamLM(LM):
    def __init__(self, variant: str, home: str | None = None, engine: str | None = None,
                 threads: int | None = None, batch_size: int | str = 16, device: str | None = None,
                 **_: Any):
        super().__init__()
        self.store = Store(home) if home else Store()
        self.variant = self.store.get(variant)
        self.engine = open_engine(self.variant, engine=engine, threads=int(threads) if threads else None,
                                  device=device, store=self.store)
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16

    @property
    def tokenizer_name(self) -> str:
        return self.variant.name

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [tuple(r.args) for r in requests]
        return [(ll, bool(g)) for ll, g in loglikelihoods(self.engine, pairs, self.batch_size, greedy=True)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        tok = self.engine.tokenizer
        prefix = [tok.eos_token_ids[0]] if tok.eos_token_ids else []
        out = []
        for r in requests:
            ids = prefix + tok.encode(r.args[0], add_special_tokens=False)
            total = 0.0
            window = min(self.engine.max_context, 2048)
            for w in plan_windows(len(ids), window, window - 1 if len(ids) > window else window):
                lp = self.engine.score([ids[w.begin : w.end]])[0]
                total += float(np.sum(lp[-w.scored :]))
            out.append(total)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for r in requests:
            context, kwargs = r.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
            params = SamplingParams(max_tokens=int(kwargs.get("max_gen_toks", 256)), temperature=temperature,
                                    stop=tuple(until))
            ids = self.engine.tokenizer.encode(context, add_special_tokens=False)
            out.append(self.engine.generate([ids], params)[0].text)
        return out

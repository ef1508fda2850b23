"""What a quantized base costs an adapter: the adapter kept apart (float low-rank updates) over a variant of
its base, measured against the same adapter over the float base it was trained on.

Both run on the transformers engine with the adapter applied to every token (the serving path's
:class:`~slipstream.engines.torch.lora.AdapterBank`); the same WikiText-2 windows are scored by both, so the
report is each one's perplexity, the change, and the variant's KL divergence from the float pair and top-1
agreement with it, as ``evaluate`` reports a variant against its parent.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from slipstream.errors import InvalidConfig
from slipstream.evaluation.perplexity import (DivergenceAccumulator, NLLAccumulator, paired_change, plan_windows,
                                              scored_rows)
from slipstream.extras import library_versions
from slipstream.machine import describe_machine
from slipstream.progress import Progress, or_null
from slipstream.store import Store


def adapter_on_variant(adapter: str, variant: str, *, store: Store | None = None, max_tokens: int = 8192,
                       window: int = 1024, stride: int = 512, threads: int | None = None,
                       progress: Progress | None = None) -> dict[str, Any]:
    """Perplexity of ``adapter`` over ``variant`` and over its own base, and the divergence between them."""
    from slipstream.engines.loading import open_engine
    from slipstream.evaluation.tasks import get_task
    from slipstream.models.adapters import adapter_for

    store = store or Store()
    entry = store.get(adapter)
    if entry.kind != "adapter":
        raise InvalidConfig(f"{adapter!r} is a {entry.kind}, not an adapter")
    path = adapter_for(store, adapter, variant)  # the variant descends from the adapter's base
    base = entry.parent
    engines = {}
    for name in (base, variant):
        engine = open_engine(name, engine="transformers", threads=threads, store=store)
        engine.adapters(1).register(adapter, path)
        engines[name] = engine
    text = get_task("wikitext2").load()
    ref, target = engines[base], engines[variant]
    prefix = ref.tokenizer.bos_prefix()
    tokens = ref.tokenizer.encode(text, add_special_tokens=False)[:max_tokens]
    context = min(ref.max_context, target.max_context)
    windows = plan_windows(len(tokens), min(window, context) - len(prefix), stride)
    ref_nll, nll, div = NLLAccumulator(), NLLAccumulator(), DivergenceAccumulator()
    with or_null(progress).task(f"{adapter} over {variant} vs over {base}", total=len(windows)) as bar:
        for w in windows:
            ids = tokens[w.begin:w.end]
            with ref.adapter_bank.applied(adapter):
                ref_rows, ref_lp = scored_rows(w, ref.logprobs([prefix + ids])[0][len(prefix):], ids)
            with target.adapter_bank.applied(adapter):
                rows, lp = scored_rows(w, target.logprobs([prefix + ids])[0][len(prefix):], ids)
            ref_nll.add(ref_lp)
            nll.add(lp)
            div.add(ref_rows, rows)
            bar.advance()
    on_base = ref_nll.result()
    on_variant = nll.result() | div.result() | paired_change(nll, ref_nll)
    result = {"adapter": adapter, "base": base, "variant": variant, "tokens": len(tokens),
              "on_base": on_base, "on_variant": on_variant,
              "engine": asdict(target.info())}
    store.add_result(variant, "adapter-eval", f"{adapter}:wikitext2:{max_tokens}",
                     {"adapter": adapter, "base": base, "max_tokens": max_tokens, "window": window, "stride": stride},
                     {"perplexity_on_base": on_base["perplexity"], "perplexity": on_variant["perplexity"],
                      "kl_mean": on_variant.get("kl_mean"), "top1_agreement": on_variant.get("top1_agreement")},
                     describe_machine(), library_versions())
    for e in engines.values():
        e.close()
    return result

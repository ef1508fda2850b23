"""Structured pruning of encoders (BERT, RoBERTa, XLM-RoBERTa, MPNet...): whole layers, attention heads and
MLP channels, chosen on calibration sentences; the ``prune-structured`` technique's path for embedding and
classification models.

- Layers: those that change their input least (one minus the cosine between a layer's input and output
  hidden states, averaged over real tokens) go first, as ShortGPT does for decoders.
- Heads (BERT-family): the same number in every layer, the least important by the size of what each head
  writes through the attention's output projection. The config records the heads kept per layer and
  :mod:`slipstream.models.heads` loads it back, so transformers and ONNX Runtime run the result;
  CTranslate2's converter reads heads from ``num_attention_heads`` and cannot take it (refused in one line).
- MLP channels: the same number in every layer, the least important by mean |activation| times the norm of
  the channel's output weights; ``intermediate_size`` shrinks, so every engine runs the result.

Pruning loses accuracy; distillation against the original's embeddings (the ``distill`` technique on the
pruned variant) recovers much of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slipstream.errors import InvalidConfig, Unsupported
from slipstream.progress import Progress, or_null

MLP_MULTIPLE = 8


def _layers(model: Any) -> Any:
    base = getattr(model, model.base_model_prefix, model)
    encoder = getattr(base, "encoder", None)
    if encoder is None or not hasattr(encoder, "layer"):
        raise Unsupported(f"prune-structured: {type(model).__name__} has no encoder.layer stack to prune")
    return base, encoder


def _attention_out(layer: Any) -> Any:
    attention = layer.attention
    if hasattr(attention, "output") and hasattr(attention.output, "dense"):  # BERT, RoBERTa, ELECTRA
        return attention.output.dense
    if hasattr(attention, "attn") and hasattr(attention.attn, "o"):  # MPNet
        return attention.attn.o
    raise Unsupported(f"prune-structured: cannot find the attention output projection of {type(layer).__name__}")


def _mlp(layer: Any) -> tuple[Any, Any]:
    if hasattr(layer, "intermediate") and hasattr(layer, "output"):
        return layer.intermediate.dense, layer.output.dense
    raise Unsupported(f"prune-structured: cannot find the MLP of {type(layer).__name__}")


def calibration_sentences(src: Path, calibration: Any) -> list[list[int]]:
    """Token ids of calibration lines (four words or more), one sentence or paragraph each, cut to length."""
    from slipstream.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(src)
    out = []
    for line in calibration.lines():
        if len(line.split()) < 4:
            continue
        ids = tokenizer.encode(line.strip())
        out.append(ids[: calibration.sequence_length - 1] + ids[-1:] if len(ids) > calibration.sequence_length else ids)
        if len(out) >= calibration.samples:
            break
    return out


def _forward_all(base: Any, batches: list, hooks: list, current: dict, progress: Progress, label: str) -> None:
    """Every calibration batch through ``base`` (the hooks read the batch's mask from ``current``); the
    hooks are removed afterwards."""
    import torch

    try:
        with progress.task(label, total=len(batches)) as bar, torch.no_grad():
            for ids, mask in batches:
                current["mask"] = mask.bool()
                base(input_ids=ids, attention_mask=mask)
                bar.advance()
    finally:
        for h in hooks:
            h.remove()


def prune_encoder(model: Any, config: Any, sentences: list[list[int]], progress: Progress | None = None) -> dict:
    """Prune ``model`` in place as ``config`` (a StructuredPrune) says; return what was removed."""
    import torch

    progress = or_null(progress)
    base, encoder = _layers(model)
    cfg = model.config
    pad = int(cfg.pad_token_id or 0)
    facts: dict[str, Any] = {}
    from slipstream.techniques.hf_io import pad_batch

    batches = [pad_batch(sentences[i:i + 8], pad) for i in range(0, len(sentences), 8)]
    current: dict[str, Any] = {}
    n_layers = len(encoder.layer)
    if config.layers:
        keep = n_layers - round(n_layers * config.layers)
        if keep < 1:
            raise InvalidConfig(f"prune-structured: layers={config.layers} would remove all {n_layers} layers")
        change = torch.zeros(n_layers)
        hooks = []
        for i, layer in enumerate(encoder.layer):
            def hook(module, args, kwargs, output, i=i):
                x = args[0] if args else kwargs["hidden_states"]
                y = output[0] if isinstance(output, tuple) else output
                cos = torch.nn.functional.cosine_similarity(x, y, dim=-1)
                change[i] += (1 - cos)[current["mask"]].mean()
            hooks.append(layer.register_forward_hook(hook, with_kwargs=True))
        _forward_all(base, batches, hooks, current, progress, "scoring layers")
        kept = sorted(torch.argsort(change, descending=True)[:keep].tolist())
        encoder.layer = torch.nn.ModuleList([encoder.layer[i] for i in kept])
        cfg.num_hidden_layers = keep
        facts["layers"] = {"kept": kept, "removed": sorted(set(range(n_layers)) - set(kept)),
                           "change": [round(float(c) / max(len(batches), 1), 5) for c in change]}
    heads = cfg.num_attention_heads
    head_dim = cfg.hidden_size // heads
    width = _mlp(encoder.layer[0])[0].out_features
    head_score = torch.zeros(len(encoder.layer), heads)
    mlp_score = torch.zeros(len(encoder.layer), width)
    if config.heads or config.mlp:
        hooks = []
        for i, layer in enumerate(encoder.layer):
            out_proj, (_, down) = _attention_out(layer), _mlp(layer)

            def on_attn(module, args, i=i):
                x = args[0]  # [b, t, heads * head_dim]: each head's context, before the output projection
                w = module.weight.view(module.weight.shape[0], heads, head_dim)
                parts = x.view(*x.shape[:2], heads, head_dim)
                written = torch.einsum("bthd,ohd->btho", parts, w).norm(dim=-1)  # [b, t, heads]
                head_score[i] += written[current["mask"]].mean(0)

            def on_mlp(module, args, i=i):
                x = args[0].abs()[current["mask"]].mean(0)  # [width]
                mlp_score[i] += x * module.weight.norm(dim=0)

            if config.heads:
                hooks.append(out_proj.register_forward_pre_hook(on_attn))
            if config.mlp:
                hooks.append(down.register_forward_pre_hook(on_mlp))
        _forward_all(base, batches, hooks, current, progress, "scoring heads and MLP channels")
    if config.heads:
        drop = round(heads * config.heads)
        if drop >= heads:
            raise InvalidConfig(f"prune-structured: heads={config.heads} would remove all {heads} heads")
        from slipstream.models.heads import KEY, attention_parts, shrink

        attention_parts(encoder.layer[0])  # refuses a family whose heads cannot be pruned, before any change
        plan = {i: sorted(torch.argsort(head_score[i])[:drop].tolist()) for i in range(len(encoder.layer))}
        if drop:
            for i, layer in enumerate(encoder.layer):
                shrink(layer, head_dim, [h for h in range(heads) if h not in plan[i]])
            setattr(cfg, KEY, {str(i): heads - drop for i in range(len(encoder.layer))})
        facts["heads"] = {"removed_per_layer": drop, "of": heads, "removed": {str(k): v for k, v in plan.items()}}
    if config.mlp:
        keep = min(width, max(MLP_MULTIPLE, round(width * (1 - config.mlp) / MLP_MULTIPLE) * MLP_MULTIPLE))
        for i, layer in enumerate(encoder.layer):
            up, down = _mlp(layer)
            idx = torch.sort(torch.argsort(mlp_score[i], descending=True)[:keep]).values
            new_up = torch.nn.Linear(up.in_features, keep, bias=up.bias is not None, dtype=up.weight.dtype)
            new_down = torch.nn.Linear(keep, down.out_features, bias=down.bias is not None, dtype=down.weight.dtype)
            with torch.no_grad():
                new_up.weight.copy_(up.weight[idx])
                if up.bias is not None:
                    new_up.bias.copy_(up.bias[idx])
                new_down.weight.copy_(down.weight[:, idx])
                if down.bias is not None:
                    new_down.bias.copy_(down.bias)
            layer.intermediate.dense, layer.output.dense = new_up, new_down
        cfg.intermediate_size = keep
        facts["mlp"] = {"kept": keep, "of": width}
    return facts | {"parameters": sum(p.numel() for p in model.parameters())}


def apply(src: Path, out: Path, config: Any, device: str = "cpu", progress: Progress | None = None) -> dict:
    from slipstream.calibration import Calibration
    from slipstream.techniques.hf_io import load_model, save_model

    progress = or_null(progress)
    model = load_model(src, device="cpu")
    calibration = Calibration(config.calibration, config.samples, min(config.sequence_length, 128))
    sentences = calibration_sentences(src, calibration)
    facts = prune_encoder(model, config, sentences, progress)
    with progress.task("saving the pruned encoder"):
        save_model(model, src, out)
    facts["calibration"] = {"source": calibration.source, "sentences": len(sentences)}
    facts["engines"] = ("transformers and ONNX Runtime" + ("" if config.heads else "; CTranslate2 too (dense)"))
    return facts

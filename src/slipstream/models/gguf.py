"""GGUF files: check them, then dequantize into a plain transformers model saved as safetensors."""

from __future__ import annotations

from pathlib import Path

from slipstream.errors import InvalidModel
from slipstream.extras import require

GGUF_MAGIC = b"GGUF"


def is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def check_gguf(path: Path) -> str:
    """Parse the GGUF header and tensor table; return the architecture it declares."""
    if not is_gguf(path):
        raise InvalidModel(f"{path}: not a GGUF file (bad magic bytes)")
    gguf = require("gguf", "core", "reading GGUF files")
    try:
        reader = gguf.GGUFReader(str(path))
        field = reader.fields.get("general.architecture")
        arch = bytes(field.parts[field.data[0]]).decode() if field else "unknown"
        end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    except Exception as exc:  # the reader raises many kinds of errors on damaged files
        raise InvalidModel(f"{path}: corrupt GGUF file ({type(exc).__name__}: {exc})") from exc
    if end > path.stat().st_size:
        raise InvalidModel(f"{path}: corrupt GGUF file (tensor data runs past the end; truncated?)")
    return arch


def gguf_to_safetensors(path: Path, out_dir: Path, dtype: str = "float32") -> None:
    """Dequantize ``path`` with transformers' GGUF loader and save a plain model plus tokenizer."""
    require("accelerate", "core", "loading GGUF files")
    torch = require("torch", "core")
    from transformers import AutoModelForCausalLM

    check_gguf(path)
    try:
        quantized = AutoModelForCausalLM.from_pretrained(path.parent, dtype=getattr(torch, dtype), gguf_file=path.name)
    except Exception as exc:
        raise InvalidModel(f"{path}: transformers cannot read this GGUF ({type(exc).__name__}: {exc})") from exc
    # A model loaded straight from GGUF refuses save_pretrained; rebuild a plain one from its
    # config (without the gguf quantization_config) and move the dequantized weights across.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    with torch.device("meta"):
        plain = type(quantized)(config)
    plain.load_state_dict(quantized.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(out_dir)
    save_tokenizer(path, out_dir)


def save_tokenizer(path: Path, out_dir: Path) -> None:
    """Save the GGUF's vocabulary as a Hugging Face tokenizer that splits text as llama.cpp does with it."""
    from transformers import AutoTokenizer

    check_gguf(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as exc:
        raise InvalidModel(f"{path}: transformers cannot read this GGUF's tokenizer ({type(exc).__name__}: {exc})") \
            from exc
    import gguf

    fields = gguf.GGUFReader(str(path)).fields  # parsed once: a 262k-word vocabulary takes seconds
    _byte_level_as_written(tokenizer, fields)
    _set_special_tokens(tokenizer, fields)
    _sentencepiece_as_bpe(tokenizer, fields)
    tokenizer.save_pretrained(out_dir)


def _byte_level_as_written(tokenizer, fields: dict) -> None:
    """Give a byte-level BPE vocabulary (GGUF ``gpt2``) back the pre-tokenizer its file names.

    transformers' GGUF conversion keeps only the byte-level split, so SmolLM2 (``smollm``: digits one at a
    time, then byte-level) would split text otherwise than its own tokenizer and llama.cpp do.
    """
    import json

    from tokenizers import Tokenizer as Fast

    from slipstream.models.gguf_vocab import restore_byte_level

    model, pre = fields.get("tokenizer.ggml.model"), fields.get("tokenizer.ggml.pre")
    if model is None or model.contents() != "gpt2" or pre is None:
        return
    state = restore_byte_level(json.loads(tokenizer.backend_tokenizer.to_str()), pre.contents())
    if state is not None:
        tokenizer._tokenizer = Fast.from_str(json.dumps(state))


def _sentencepiece_as_bpe(tokenizer, fields: dict) -> None:
    """Rebuild a SentencePiece vocabulary that transformers converted to a Unigram model as the BPE
    that llama.cpp runs.

    A GGUF "llama" tokenizer is pieces with scores, and llama.cpp merges adjacent pieces in order of
    the merged piece's score. Gemma's scores are BPE merge orders (``▁Robert`` -9383, ``▁R`` -136),
    and transformers 5.17 turns Gemma's vocabulary into a Unigram model, which on such scores prefers
    many short pieces: ``▁R ob ert`` for `` Robert``, 1.65x the tokens llama.cpp makes on WikiText-2,
    and a perplexity that is not the model's. Here the merges are every split of a normal piece into
    two normal pieces, ordered by the merged piece's score, as llama.cpp applies them, and the
    user-defined pieces (runs of spaces or newlines) match first, as in llama.cpp.
    """
    import json

    import gguf
    from tokenizers import models

    backend = tokenizer.backend_tokenizer
    state = json.loads(backend.to_str())
    if state["model"]["type"] != "Unigram":
        return
    if fields.get("tokenizer.ggml.model") is None or fields["tokenizer.ggml.model"].contents() != "llama":
        return
    types = fields["tokenizer.ggml.token_type"].contents()
    texts = fields["tokenizer.ggml.tokens"].contents()
    pieces = state["model"]["vocab"]  # [piece, score] in id order, pieces as transformers mapped them
    user = [i for i, t in enumerate(types) if t == gguf.TokenType.USER_DEFINED]  # runs of spaces, newlines...
    raw = [i for i, t in enumerate(types) if t in (gguf.TokenType.USER_DEFINED, gguf.TokenType.BYTE)]
    # raw pieces by their GGUF text (<0x09>, not a tab; "   ", not transformers' "▁▁▁"), and only so: a
    # second name for the same id would leave the id's token to hash order, and the added token below
    # would then get an id of its own
    raw_ids = set(raw)
    vocab = {piece: i for i, (piece, _) in enumerate(pieces) if i not in raw_ids} | {texts[i]: i for i in raw}
    normal = {piece for i, (piece, _) in enumerate(pieces) if types[i] == gguf.TokenType.NORMAL}
    merges = []
    for piece in normal:
        score = pieces[vocab[piece]][1]
        for k in range(1, len(piece)):
            if piece[:k] in normal and piece[k:] in normal:
                merges.append((-score, vocab[piece], k, piece[:k], piece[k:]))
    merges.sort()
    unk = state["model"].get("unk_id")
    backend.model = models.BPE(vocab=vocab, merges=[(a, b) for *_, a, b in merges],
                               unk_token=pieces[unk][0] if unk is not None else None,
                               byte_fallback=bool(state["model"].get("byte_fallback")), fuse_unk=True)
    # llama.cpp splits the text on user-defined pieces before merging; as added tokens they do the same here
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(texts[i], normalized=False, special=False) for i in user])


_SPECIAL_IDS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
}


def _set_special_tokens(tokenizer, fields: dict) -> None:
    """Take the special tokens from the GGUF's own metadata: transformers' GGUF tokenizer conversion
    can get them wrong (5.17 turns SmolLM2's eos <|im_end|> into <|im_start|>)."""

    for attr, key in _SPECIAL_IDS.items():
        field = fields.get(key)
        if field is not None:
            setattr(tokenizer, attr, tokenizer.convert_ids_to_tokens(int(field.contents())))
    add_bos = fields.get("tokenizer.ggml.add_bos_token")
    bos = tokenizer.bos_token
    if add_bos is not None and bool(add_bos.contents()) and bos and tokenizer("a")["input_ids"][:1] != [tokenizer.bos_token_id]:
        # The GGUF says the model expects BOS first (Gemma); transformers' conversion can drop that.
        from tokenizers import processors

        tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.bos_token_id)])
    # WordPiece-style clean-up corrupts byte-level BPE output; transformers warns about it on every decode.
    tokenizer.clean_up_tokenization_spaces = False

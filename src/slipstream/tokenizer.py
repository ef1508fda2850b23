"""The variant's tokenizer, shared by every layer that turns text into token ids (calibration,
techniques, exporters, engines, the server); it lives below all of them.

Where the model ships a ``tokenizer.json`` it is run with the ``tokenizers`` library directly, and
chat templates are rendered with Jinja2 the way transformers renders them. This keeps engines that
need no PyTorch (CTranslate2, llama.cpp, the server) free of importing it: about 400 MB of resident
memory. Tokenizers without a ``tokenizer.json`` fall back to transformers' ``AutoTokenizer``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence


class Tokenizer:
    """Encode, decode, and apply the chat template. Engines speak token ids."""

    def __init__(self, backend: Any, *, eos_token_ids: Sequence[int], pad_token_id: int | None,
                 special: dict[str, str], chat_template: str | None, uses_transformers: bool = False):
        self._backend = backend
        self._transformers = uses_transformers
        self.eos_token_ids: tuple[int, ...] = tuple(dict.fromkeys(int(i) for i in eos_token_ids))
        fallback = self.eos_token_ids[0] if self.eos_token_ids else 0
        self.pad_token_id: int = int(pad_token_id if pad_token_id is not None else fallback)
        self.special = special  # bos_token, eos_token, ... as strings, for chat templates
        self.chat_template = chat_template

    @classmethod
    def from_dir(cls, path: Path, trust_remote_code: bool = False) -> "Tokenizer":
        path = Path(path)
        config = _read_json(path / "tokenizer_config.json")
        special = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
        special = {k: v for k, v in special.items() if v}
        template = _chat_template(path, config)
        if (path / "tokenizer.json").exists():
            from tokenizers import Tokenizer as Fast

            backend = Fast.from_file(str(path / "tokenizer.json"))
            backend.no_padding()
            backend.no_truncation()
            ids = lambda t: backend.token_to_id(t) if t else None  # noqa: E731
            return cls(backend, eos_token_ids=_eos_ids(path, ids(special.get("eos_token"))),
                       pad_token_id=ids(special.get("pad_token")), special=special, chat_template=template)
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        special |= {k: v for k, v in hf.special_tokens_map.items() if isinstance(v, str)}
        return cls(hf, eos_token_ids=_eos_ids(path, hf.eos_token_id), pad_token_id=hf.pad_token_id,
                   special=special, chat_template=template or getattr(hf, "chat_template", None),
                   uses_transformers=True)

    @property
    def vocab_size(self) -> int:
        if self._transformers:
            return len(self._backend)
        return self._backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if self._transformers:
            return list(self._backend(text, add_special_tokens=add_special_tokens)["input_ids"])
        return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def tokens(self, ids: Sequence[int]) -> list[str]:
        if self._transformers:
            return list(self._backend.convert_ids_to_tokens(list(ids)))
        return [self._backend.id_to_token(int(i)) for i in ids]

    def token_id(self, token: str) -> int | None:
        if self._transformers:
            return self._backend.convert_tokens_to_ids(token)
        return self._backend.token_to_id(token)

    def bos_prefix(self) -> list[int]:
        """The BOS token, for tokenizers that add one by default (Llama 2, Gemma); none otherwise."""
        with_special, without = self.encode("a"), self.encode("a", add_special_tokens=False)
        n = len(with_special) - len(without)
        return with_special[:n] if n > 0 and with_special[n:] == without else []

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)

    def render_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise ValueError("this model has no chat template")
        return _compile(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, **self.special
        )

    def chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of ``messages`` under the model's chat template (the template adds special tokens)."""
        return self.encode(self.render_chat(messages, add_generation_prompt), add_special_tokens=False)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # AddedToken serialised as a dict
        return value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(path: Path, config: dict) -> str | None:
    if (path / "chat_template.jinja").exists():
        return (path / "chat_template.jinja").read_text()
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: take the default one
        named = {t.get("name"): t.get("template") for t in template}
        template = named.get("default") or next(iter(named.values()), None)
    if template is None and (path / "chat_template.json").exists():
        template = _read_json(path / "chat_template.json").get("chat_template")
    return template


def _eos_ids(path: Path, tokenizer_eos: int | None) -> list[int]:
    ids: list[int] = []
    value = _read_json(path / "generation_config.json").get("eos_token_id")
    if isinstance(value, int):
        ids.append(value)
    elif isinstance(value, list):
        ids.extend(int(v) for v in value)
    if tokenizer_eos is not None:
        ids.append(int(tokenizer_eos))
    return ids


_TEMPLATES: dict[str, Any] = {}


def _compile(source: str) -> Any:
    """Compile a chat template in the sandboxed Jinja2 environment transformers uses."""
    if source not in _TEMPLATES:
        from jinja2.exceptions import TemplateError
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(
            x, indent=indent, ensure_ascii=ensure_ascii)
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        _TEMPLATES[source] = env.from_string(source)
    return _TEMPLATES[source]

"""The lean tokenizer (tokenizers + Jinja2) matches transformers' and does not import torch."""

from __future__ import annotations

import subprocess
import sys

from slipstream.tokenizer import Tokenizer
from slipstream.evaluation.data import text_set


def test_matches_transformers(tiny_llama_dir):
    from transformers import AutoTokenizer

    ours, theirs = Tokenizer.from_dir(tiny_llama_dir), AutoTokenizer.from_pretrained(tiny_llama_dir)
    text = text_set("wikitext2")[:50_000]
    ids = ours.encode(text)
    assert ids == theirs(text)["input_ids"]
    assert ours.decode(ids[:200]) == theirs.decode(ids[:200], skip_special_tokens=True)
    assert ours.eos_token_ids == (2,) and ours.pad_token_id == 2
    assert ours.tokens(ids[:5]) == theirs.convert_ids_to_tokens(ids[:5])


def test_chat_template_renders_like_transformers(tiny_llama_dir, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    d = tmp_path / "chat"
    shutil.copytree(tiny_llama_dir, d)
    template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}\n{% endfor %}"
                "{% if add_generation_prompt %}<s>assistant:{% endif %}")
    (d / "chat_template.jinja").write_text(template)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    ours, theirs = Tokenizer.from_dir(d), AutoTokenizer.from_pretrained(d)
    assert ours.render_chat(messages) == theirs.apply_chat_template(messages, add_generation_prompt=True,
                                                                    tokenize=False)
    assert ours.chat(messages)[0] == ours.token_id("<s>")


def test_does_not_import_torch(tiny_llama_dir):
    code = (f"from slipstream.tokenizer import Tokenizer; import sys; "
            f"Tokenizer.from_dir({str(tiny_llama_dir)!r}).encode('hello'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

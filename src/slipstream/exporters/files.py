"""What every exported variant directory carries besides the engine's own files: the parent's tokenizer and
configuration in ``tokenizer/``, so the directory runs anywhere on its own."""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_DIR = "tokenizer"


def copy_tokenizer(src: Path, out: Path) -> Path:
    """Copy the model's tokenizer files, chat template, config.json and generation_config.json from ``src``
    into ``out/tokenizer``; return that folder."""
    from slipstream.models.checks import CONFIG_FILES, TOKENIZER_FILES, copy_sentence_files

    tok = out / TOKENIZER_DIR
    tok.mkdir(exist_ok=True)
    for name in dict.fromkeys((*CONFIG_FILES, *TOKENIZER_FILES, "generation_config.json")):
        if (src / name).exists():
            shutil.copy2(src / name, tok / name)
    copy_sentence_files(src, tok)
    return tok

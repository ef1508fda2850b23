"""The documentation stays true to the code: every relative link in README.md, BENCHMARKS.md, docs/ and
benchmarks/README.md resolves (files, and ``#anchors`` as GitHub makes them from headings), the techniques
table in README.md and docs/techniques.md is what ``slipstream techniques --markdown`` prints, and every
benchmark script is in benchmarks/README.md's table.

Regenerate the techniques tables with ``.venv/bin/python -m tests.test_docs``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "benchmarks" / "README.md",
               *(ROOT / "docs").rglob("*.md")])
TABLES = [ROOT / "README.md", ROOT / "docs" / "techniques.md"]  # files carrying the generated table
START, END = "<!-- techniques:start -->\n", "<!-- techniques:end -->"
REGENERATE = ".venv/bin/python -m tests.test_docs"

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)


def _unfenced(text: str) -> str:
    """``text`` without fenced code blocks, where ``#`` lines are not headings."""
    return re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.M | re.S)


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code, where brackets are not links."""
    return re.sub(r"`[^`\n]*`", "", _unfenced(text))


def links(path: Path) -> list[str]:
    prose = _prose(path.read_text())
    return LINK.findall(prose) + REFERENCE.findall(prose)


def anchors(path: Path) -> set[str]:
    """The ids GitHub gives ``path``'s headings: lowercased, punctuation dropped (inline code keeps its
    text), spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    for line in _unfenced(path.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path):
    broken = []
    for target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, file:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / unquote(path_part)).resolve() if path_part else doc
        if not dest.exists():
            broken.append(f"{target}: no such file {dest.relative_to(ROOT) if ROOT in dest.parents else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links:\n  " + "\n  ".join(broken)


def test_anchor_rules():
    assert _slugs("## CPUs without VNNI\n### Key/value cache in bfloat16\n## Serving\n## Serving\n") == \
        {"cpus-without-vnni", "keyvalue-cache-in-bfloat16", "serving", "serving-1"}
    assert _slugs("## CTranslate2, SmoothQuant and `int8-rows`\n```bash\n# not a heading\n```\n") == \
        {"ctranslate2-smoothquant-and-int8-rows"}


def _slugs(text: str) -> set[str]:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".md", delete=False) as f:
        f.write(text)
    try:
        return anchors(Path(f.name))
    finally:
        Path(f.name).unlink()


def generated_table() -> str:
    from slipstream.cli.techniques import techniques_markdown

    return techniques_markdown()


def _block(text: str, path: Path) -> tuple[int, int]:
    assert START in text and END in text, f"{path.relative_to(ROOT)}: the markers {START.strip()} / {END} are missing"
    return text.index(START) + len(START), text.index(END)


@pytest.mark.parametrize("doc", TABLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_techniques_table_matches_the_catalog(doc: Path):
    text = doc.read_text()
    i, j = _block(text, doc)
    assert text[i:j] == generated_table(), (
        f"{doc.relative_to(ROOT)}: the techniques table differs from `slipstream techniques --markdown`; "
        f"regenerate it with `{REGENERATE}`")


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md is {len(lines)} lines: move detail to docs/"
    block = lines[lines.index("```bash") + 1:][:2]
    assert [b.split()[:2] for b in block] == [["make", "demo"], ["make", "test"]]


def test_every_benchmark_script_is_in_the_guide():
    guide = links(ROOT / "benchmarks" / "README.md")
    scripts = sorted(str(p.relative_to(ROOT / "benchmarks")) for p in (ROOT / "benchmarks").glob("*/*.py"))
    missing = [s for s in scripts if s not in guide]
    assert not missing, f"benchmarks/README.md has no row for: {', '.join(missing)}"


def regenerate() -> None:
    table = generated_table()
    for doc in TABLES:
        text = doc.read_text()
        i, j = _block(text, doc)
        if text[i:j] != table:
            doc.write_text(text[:i] + table + text[j:])
            print(f"rewrote the techniques table in {doc.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    regenerate()

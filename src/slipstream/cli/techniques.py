"""``slipstream techniques``: what can be applied, with its options."""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

import typer

from slipstream.cli.output import print_json, table


def techniques_cmd(
    as_json: bool = typer.Option(False, "--json"),
    markdown: bool = typer.Option(False, "--markdown", help="Print the catalog as the markdown table README.md carries"),
) -> None:
    """List the registered techniques and their options."""
    from slipstream.config import describe
    from slipstream.techniques.registry import all_techniques

    if markdown:
        print(techniques_markdown(), end="")
        return
    rows = []
    for spec in all_techniques():
        options = {k: {"type": describe(h), "default": d} for k, (h, d) in spec.options().items()}
        installed = spec.extra_installed()
        rows.append({"name": spec.name, "kind": spec.kind, "output_format": spec.output_format,
                     "extra": spec.extra, "installed": installed, "summary": spec.summary, "options": options})
    if as_json:
        print_json(rows)
        return
    table(None, ["technique", "kind", "makes", "installed", "options", "summary"],
          [[r["name"], r["kind"], r["output_format"], "yes" if r["installed"] else f"no (slipstream[{r['extra']}])",
            "; ".join(f"{k}: {v['type']} = {v['default']!r}" for k, v in r["options"].items()), r["summary"]]
           for r in rows])


def techniques_markdown() -> str:
    """The catalog as one markdown table, read from what each technique declares (its config's fields,
    output format, extra, calibration and devices). It is the same on every machine: nothing in it depends
    on what is installed. README.md and docs/techniques.md carry it; tests/test_docs.py checks they match."""
    from slipstream.engines.loading import engines_for
    from slipstream.techniques.registry import all_techniques

    lines = ["| technique | kind | tasks | options: default (allowed) | output | engines | extra | needs |",
             "|---|---|---|---|---|---|---|---|"]
    for spec in all_techniques():
        options = "<br>".join(f"`{name}` = **{_value(default)}** ({_allowed(hint)})"
                              for name, (hint, default) in spec.options().items())
        needs = [*(["calibration text"] if spec.needs_calibration else []),
                 *([" or ".join(d.upper() for d in spec.devices) + " only"]
                   if set(spec.devices) != {"cpu", "cuda"} else [])]
        engines = dict.fromkeys(e for task in spec.tasks for e in engines_for(spec.output_format, task))
        cells = [f"`{spec.name}`", spec.kind, ", ".join(spec.tasks), options or "—", f"`{spec.output_format}`",
                 ", ".join(engines) or "—", f"`{spec.extra}`" if spec.extra else "—",
                 ", ".join(needs) or "—"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value) or "(empty)"
    return str(value)


def _allowed(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return ", ".join(_value(a) for a in get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_allowed(h) for h in get_args(hint))
    if hint is type(None):
        return "none"
    if origin in (tuple, list):
        return "comma-separated names"
    return getattr(hint, "__name__", str(hint))

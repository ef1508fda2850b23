"""``slipstream techniques``: what can be applied, with its options."""

from __future__ import annotations

import typer

from slipstream.cli.output import print_json, table


def techniques_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the registered techniques and their options."""
    from slipstream.techniques.config import describe
    from slipstream.techniques.registry import all_techniques

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

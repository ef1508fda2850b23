"""``slipstream models import|list|show|remove``."""

from __future__ import annotations

from typing import Optional

import typer

from slipstream.cli.output import RichProgress, mb, out, print_json, table

app = typer.Typer(help="Take in models and list what the store holds.", no_args_is_help=True)


@app.command("import")
def import_cmd(
    source: str = typer.Argument(..., help="A bundled model (smollm2-135m), a model directory, a .gguf file, or a hub id"),
    name: Optional[str] = typer.Option(None, "--name", help="Name in the store (default: from the source)"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Accept pickle weights (.bin/.pt), which can run code"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the model's own Python code"),
    revision: Optional[str] = typer.Option(None, "--revision", help="Hub revision (hub ids only)"),
    as_json: bool = typer.Option(False, "--json", help="Print the registry entry as JSON"),
) -> None:
    """Import a model and store it as safetensors."""
    from slipstream.models.intake import import_model

    record = import_model(source, name, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                          revision=revision, progress=RichProgress(not as_json))
    if as_json:
        print_json(record.to_dict())
    else:
        from slipstream.models.tasks import task_of

        out.print(f"imported [bold]{record.name}[/]: {task_of(record)}, {record.architecture}, "
                  f"{record.parameters:,} parameters, "
                  f"{mb(record.size_bytes)}, sha256 {record.sha256[:12]}…")


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """Models and variants in the store."""
    from slipstream.store import Store

    records = Store().list()
    if as_json:
        print_json([r.to_dict() for r in records])
        return
    table(None, ["name", "kind", "format", "architecture", "parameters", "size", "parent", "technique"],
          [[r.name, r.kind, r.format, r.architecture, f"{r.parameters:,}" if r.parameters else "—",
            mb(r.size_bytes), r.parent or "—", _technique(r.technique)] for r in records])


@app.command("show")
def show_cmd(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Everything the store knows about one model or variant."""
    from slipstream.store import Store

    store = Store()
    record = store.get(name)
    manifest = store.manifest(name)
    results = [r.__dict__ for r in store.results(name)]
    if as_json:
        from slipstream.models.adapters import adapters_of

        print_json(record.to_dict() | {"manifest": manifest.__dict__, "results": results,
                                       "adapters": [a.name for a in adapters_of(store, name)]})
        return
    from slipstream.models.tasks import task_of

    rows = [["kind", record.kind], ["task", task_of(record)], ["format", record.format],
            ["architecture", record.architecture],
            ["parameters", f"{record.parameters:,}" if record.parameters else "—"], ["size", mb(record.size_bytes)],
            ["sha256", record.sha256], ["source", record.source], ["parent", record.parent or "—"],
            ["technique", _technique(record.technique)], ["device", record.device or "—"],
            ["path", str(record.path)], ["created", record.created],
            ["files", ", ".join(f.path for f in manifest.files)],
            ["libraries", ", ".join(f"{k} {v}" for k, v in manifest.library_versions.items())],
            ["results", f"{len(results)} stored"]]
    from slipstream.models.adapters import adapters_of

    adapters = adapters_of(store, name)
    if adapters:
        rows.append(["adapters", ", ".join(f"{a.name} (rank {(a.technique or {}).get('rank')})" for a in adapters)])
    table(record.name, ["field", "value"], rows)


@app.command("remove")
def remove_cmd(name: str) -> None:
    """Delete a model or variant (and its results) from the store."""
    from slipstream.store import Store

    Store().remove(name)
    out.print(f"removed {name}")


def _technique(technique: dict | None) -> str:
    if not technique:
        return "—"
    rest = ", ".join(f"{k}={v}" for k, v in technique.items() if k != "technique")
    return f"{technique['technique']}({rest})"

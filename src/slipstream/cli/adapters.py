"""``slipstream adapters import|list|merge``: LoRA adapters beside their base in the store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from slipstream.cli.output import RichProgress, mb, out, print_json, table

app = typer.Typer(help="LoRA adapters: import one checked against its base, list them, merge one into its base.",
                  no_args_is_help=True)


@app.command("import")
def import_cmd(
    source: Path = typer.Argument(..., help="A PEFT LoRA directory (adapter_config.json, adapter_model.safetensors)"),
    base: str = typer.Option(..., "--base", help="The model in the store it was trained on"),
    name: Optional[str] = typer.Option(None, "--name", help="Name in the store (default: BASE-lora-DIRNAME)"),
    max_rank: int = typer.Option(256, "--max-rank", help="Refuse adapters of a higher rank"),
    as_json: bool = typer.Option(False, "--json", help="Print the registry entry as JSON"),
) -> None:
    """Check an adapter against its base (modules, shapes, rank) and store it beside the base."""
    from slipstream.models.adapters import import_adapter

    a = import_adapter(source, base, name, max_rank=max_rank, progress=RichProgress(not as_json))
    if as_json:
        print_json(a.to_dict())
        return
    t = a.technique or {}
    out.print(f"imported adapter [bold]{a.name}[/] for {base}: rank {t.get('rank')}, alpha {t.get('alpha'):g}, "
              f"{t.get('modules')} modules ({', '.join(t.get('target_modules', []))}), "
              f"{a.parameters:,} parameters, {mb(a.size_bytes)}")


@app.command("list")
def list_cmd(base: Optional[str] = typer.Option(None, "--base", help="Only this base's adapters"),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Adapters in the store, each with its base."""
    from slipstream.models.adapters import adapters_of
    from slipstream.store import Store

    found = adapters_of(Store(), base)
    if as_json:
        print_json([a.to_dict() for a in found])
        return
    table(None, ["adapter", "base", "rank", "alpha", "targets", "parameters", "size"],
          [[a.name, a.parent, str((a.technique or {}).get("rank")), f"{(a.technique or {}).get('alpha', 0):g}",
            ", ".join((a.technique or {}).get("target_modules", [])), f"{a.parameters:,}", mb(a.size_bytes)]
           for a in found])


@app.command("merge")
def merge_cmd(adapter: str = typer.Argument(..., help="An adapter in the store"),
              name: Optional[str] = typer.Option(None, "--name", help="Name of the merged model (default: "
                                                 "ADAPTER-merged)"),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Fold the adapter into its base's weights: a model variant that any technique or search takes."""
    from slipstream.models.adapters import merge_adapter

    merged = merge_adapter(adapter, name, progress=RichProgress(not as_json))
    if as_json:
        print_json(merged.to_dict())
        return
    out.print(f"merged [bold]{adapter}[/] into {merged.parent}: [bold]{merged.name}[/] ({mb(merged.size_bytes)}); "
              f"optimize it like any model, e.g. slipstream auto {merged.name}")


@app.command("evaluate")
def evaluate_cmd(adapter: str = typer.Argument(..., help="An adapter in the store"),
                 on: str = typer.Option(..., "--on", help="A variant of the adapter's base (e.g. quantized)"),
                 max_tokens: int = typer.Option(8192, "--max-tokens", help="WikiText-2 tokens scored"),
                 threads: Optional[int] = typer.Option(None, "--threads", help="Engine CPU threads"),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """The adapter kept apart over a variant of its base, against the adapter over the float base."""
    from slipstream.evaluation.adapters import adapter_on_variant

    r = adapter_on_variant(adapter, on, max_tokens=max_tokens, threads=threads, progress=RichProgress(not as_json))
    if as_json:
        print_json(r)
        return
    b, v = r["on_base"], r["on_variant"]
    table(f"{adapter} over {on} vs over {r['base']} (WikiText-2, {r['tokens']:,} tokens)",
          ["", f"over {r['base']}", f"over {on}"],
          [["perplexity", f"{b['perplexity']:.3f}", f"{v['perplexity']:.3f}"],
           ["change", "", f"{v['perplexity_ratio'] - 1:+.2%}"],
           ["KL mean", "", f"{v['kl_mean']:.5f}"], ["top-1 agreement", "", f"{v['top1_agreement']:.2%}"]])

"""``slipstream optimize MODEL --technique T [--quantization Q] [-o key=value ...]``."""

from __future__ import annotations

from typing import List, Optional

import typer

from slipstream.cli.output import RichProgress, mb, out, print_json


def optimize_cmd(
    model: str = typer.Argument(..., help="Name of a model or variant in the store"),
    technique: str = typer.Option(..., "--technique", "-t", help="Technique name (see: slipstream techniques)"),
    quantization: Optional[str] = typer.Option(
        None, "--quantization", "-q",
        help="Quantization type, e.g. int8: the technique's quantization, quant_type or dtype option"),
    option: List[str] = typer.Option([], "--option", "-o", help="Further technique option as key=value"),
    name: Optional[str] = typer.Option(None, "--name", help="Variant name (default: MODEL-<technique>-<settings>)"),
    device: Optional[str] = typer.Option(None, "--device", help="Target device: auto, cpu or cuda"),
    as_json: bool = typer.Option(False, "--json", help="Print the new variant's registry entry as JSON"),
) -> None:
    """Make a variant of MODEL with one technique; written atomically with a manifest."""
    from slipstream.errors import InvalidConfig
    from slipstream.pipeline import optimize
    from slipstream.techniques import registry

    options: dict[str, str] = {}
    for item in option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidConfig(f"--option expects key=value, got {item!r}")
        options[key.strip()] = value.strip()
    if quantization is not None:
        fields = registry.get(technique).options()
        key = next((k for k in ("quantization", "quant_type", "dtype") if k in fields), None)
        if key is None:
            raise InvalidConfig(f"technique {technique!r} has no quantization type; use --option (its options: "
                                f"{', '.join(fields)})")
        options[key] = quantization
    variant = optimize(model, technique, options, name=name, device=device, progress=RichProgress(not as_json))
    if as_json:
        print_json(variant.to_dict())
    else:
        out.print(f"made [bold]{variant.name}[/] ({variant.format}, {mb(variant.size_bytes)}) from {variant.parent}")

"""``slipstream bench VARIANT``: latency, throughput, peak memory, size on disk."""

from __future__ import annotations

from typing import List, Optional

import typer

from slipstream.cli.engine_options import HELP as ENGINE_OPTION_HELP
from slipstream.cli.output import RichProgress, mb, print_json, table


def parse_sizes(text: str) -> tuple[int, ...]:
    from slipstream.errors import InvalidConfig

    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise InvalidConfig(f"--batch-sizes expects comma-separated integers, got {text!r}") from None


def bench_cmd(
    variant: str = typer.Argument(..., help="Model or variant in the store"),
    prompt_tokens: int = typer.Option(128, "--prompt-tokens", help="Prompt length in tokens"),
    output_tokens: int = typer.Option(64, "--output-tokens", help="Tokens generated per request"),
    batch_sizes: str = typer.Option("1,8", "--batch-sizes", help="Batch sizes for throughput, comma-separated"),
    repeats: int = typer.Option(5, "--repeats", help="Timed runs per measurement (after warm-up)"),
    warmup: int = typer.Option(1, "--warmup", help="Untimed warm-up runs"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (default: all)"),
    engine: Optional[str] = typer.Option(None, "--engine", help="Engine to run the variant on"),
    workload: str = typer.Option("fixed", "--workload", help="fixed (--prompt-tokens/--output-tokens), mt-bench, "
                                 "vicuna, or file:PATH (JSONL with prompt/instruction/turns; .json array)"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda"),
    instance: Optional[str] = typer.Option(None, "--instance", help="Priced instance type for the cost line"),
    price_per_hour: Optional[float] = typer.Option(None, "--price-per-hour", help="US$ per hour, overrides --instance"),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON"),
    engine_option: Optional[List[str]] = typer.Option(None, "--engine-option", help=ENGINE_OPTION_HELP),
) -> None:
    """Benchmark VARIANT in a fresh process; the result is stored in the registry."""
    from slipstream.benchmark.run import BenchSettings, bench
    from slipstream.cli.engine_options import engine_options
    from slipstream.engines.loading import engine_name
    from slipstream.store import Store

    sizes = parse_sizes(batch_sizes)
    options = engine_options(engine_name(Store().get(variant), engine), engine_option)
    settings = BenchSettings(prompt_tokens=prompt_tokens, output_tokens=output_tokens,
                             batch_sizes=sizes, repeats=repeats, warmup=warmup,
                             threads=threads, engine=engine, device=device, workload=workload,
                             engine_options=options)
    report = bench(variant, settings=settings, progress=RichProgress(not as_json))
    if report.metrics.get("kind") == "encoder":
        _encoder_table(variant, report, as_json)
        return
    extra = _analysis(variant, report, instance, price_per_hour)
    if as_json:
        print_json(report.to_dict() | extra)
        return
    m = report.metrics
    lat, mem, eng = m["latency"], m["memory"], m["engine"]
    rows = [
        ["engine", f"{eng['engine']} ({eng['compute_type']}, {eng['device']}, {eng['threads']} threads)"],
        ["time to first token p50 / p95", f"{lat['ttft_s']['p50'] * 1e3:.1f} / {lat['ttft_s']['p95'] * 1e3:.1f} ms"],
        ["time per output token p50 / p95 / p99",
         " / ".join(f"{lat['tpot_s'][p] * 1e3:.2f}" for p in ("p50", "p95", "p99")) + " ms"],
        ["decode tokens/s, batch 1 (median, min–max)",
         f"{lat['decode_tokens_per_s']['median']:.1f} ({lat['decode_tokens_per_s']['min']:.1f}–"
         f"{lat['decode_tokens_per_s']['max']:.1f})"],
    ]
    for t in m["throughput"]:
        rows.append([f"output tokens/s, batch {t['batch_size']}", f"{t['output_tokens_per_s']['median']:.1f}"])
    rows += [["load time", f"{m['load_s']:.2f} s"], ["peak RSS, loading", mb(mem["peak_rss_load_bytes"])],
             ["peak RSS, generating", mb(mem.get("peak_rss_generate_bytes"))],
             ["peak RSS (process)", mb(mem["peak_rss_bytes"])], ["size on disk", mb(m["size_bytes"])]]
    if mem.get("peak_gpu_bytes"):
        rows.append(["peak GPU memory", mb(mem["peak_gpu_bytes"])])
    if "roofline" in extra:
        r = extra["roofline"]
        rows.append(["roofline: share of the decode limit",
                     f"{r['share_of_limit']:.0%} of {r['limit_tokens_per_s']:.0f} tok/s ({r['bound']}-bound, "
                     f"{r['bytes_per_token'] / 1e6:.0f} MB/token at {r['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s)"])
    c = extra["cost"]
    rows.append([f"cost at {c['price']['name']} (${c['price']['price_per_hour']}/h)",
                 f"${c['dollars_per_million_tokens']:.3f} per million output tokens (batch {c['batch_size']})"])
    title = (f"{variant}: prompt {prompt_tokens}, output {output_tokens} tokens" if workload == "fixed" else
             f"{variant}: {workload} prompts ({m['workload']['prompts']}), up to {output_tokens} tokens, mean prompt "
             f"{lat['prompt_tokens']} / output {lat['output_tokens']} tokens")
    table(title, ["measure", "value"], rows)


def _encoder_table(variant: str, report, as_json: bool) -> None:
    if as_json:
        print_json(report.to_dict())
        return
    m = report.metrics
    lat, mem, eng = m["latency"], m["memory"], m["engine"]
    rows = [["engine", f"{eng['engine']} ({eng['compute_type']}, {eng['device']}, {eng['threads']} threads)"],
            ["latency per sentence p50 / p95 / p99", " / ".join(f"{lat['latency_s'][p] * 1e3:.2f}"
                                                             for p in ("p50", "p95", "p99")) + " ms"],
            ["sentences/s one at a time (median)", f"{lat['sentences_per_s']['median']:.1f}"]]
    rows += [[f"sentences/s, batch {t['batch_size']}", f"{t['sentences_per_s']['median']:.1f}"] for t in m["throughput"]]
    rows += [["load time", f"{m['load_s']:.2f} s"], ["peak RSS (process)", mb(mem["peak_rss_bytes"])],
             ["size on disk", mb(m["size_bytes"])]]
    table(f"{variant}: FLORES-200 English sentences (mean {lat['mean_tokens']} tokens)", ["measure", "value"], rows)


def _analysis(variant: str, report, instance: str | None, price_per_hour: float | None) -> dict:
    """Roofline share and cost for one benchmark result."""
    from slipstream.benchmark.cost import cost, resolve_price
    from slipstream.benchmark.roofline import machine_peaks, roofline, token_cost
    from slipstream.report.build import architecture_config
    from slipstream.store import Store

    store = Store()
    record = store.get(variant)
    m = report.metrics
    best = max(m["throughput"], key=lambda t: t["output_tokens_per_s"]["median"])
    out = {"cost": cost(best["output_tokens_per_s"]["median"], resolve_price(instance, price_per_hour))
           | {"batch_size": best["batch_size"]}}
    config = architecture_config(record)
    if config:
        lat = m["latency"]
        context = lat["prompt_tokens"] + lat["output_tokens"] // 2
        compute = m["engine"]["compute_type"]
        kv = 2 if ("16" in compute and "int16" not in compute) else 4
        peaks = machine_peaks(store.home, int(m["engine"]["threads"] or 1))
        out["roofline"] = roofline(lat["decode_tokens_per_s"]["median"],
                                   token_cost(record.path, record.format, config, context, kv, record.parameters), peaks)
    return out

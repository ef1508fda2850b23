"""``slipstream bench VARIANT``: latency, throughput, peak memory, size on disk."""

from __future__ import annotations

from typing import Optional

import typer

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
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda"),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON"),
) -> None:
    """Benchmark VARIANT in a fresh process; the result is stored in the registry."""
    from slipstream.benchmark.run import BenchSettings, bench

    settings = BenchSettings(prompt_tokens=prompt_tokens, output_tokens=output_tokens,
                             batch_sizes=parse_sizes(batch_sizes), repeats=repeats, warmup=warmup,
                             threads=threads, engine=engine, device=device)
    report = bench(variant, settings=settings, progress=RichProgress(not as_json))
    if as_json:
        print_json(report.to_dict())
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
    table(f"{variant}: prompt {prompt_tokens}, output {output_tokens} tokens", ["measure", "value"], rows)

"""``slipstream demo``: the README's main job, the automatic search on the bundled demo model."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from slipstream.cli.output import RichProgress, err, out


def demo_cmd(
    budget: str = typer.Option("30m", "--budget", help="Wall-clock budget of the search"),
    max_drop: str = typer.Option("1%", "--max-drop", help="At most this much worse perplexity"),
    max_kl: str = typer.Option("auto", "--max-kl", help="And at most this mean KL divergence from the original "
                               "(nats per token; auto: ln(1 + the perplexity drop); 'none': no bound)"),
    objective: str = typer.Option("latency", "--objective", help="latency | throughput | size | cost"),
    report: Path = typer.Option(Path("slipstream-demo.html"), "--report", help="HTML report to write"),
    compare_only: bool = typer.Option(False, "--compare-only",
                                      help="Skip the search: build the fixed CTranslate2 recipes and compare them"),
    eval_tokens: int = typer.Option(8_192, "--eval-tokens", help="--compare-only: WikiText-2 test tokens to score"),
    rounds: int = typer.Option(1, "--rounds", help="--compare-only: benchmark rounds, interleaved"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON"),
) -> None:
    """Import SmolLM2-135M-Instruct and find its fastest variant within 1% perplexity and
    ln(1.01) mean KL; write the HTML report."""
    from slipstream.demo import MODEL

    start = time.perf_counter()
    if compare_only:
        from slipstream.cli.compare import render
        from slipstream.demo import DemoSettings, run_demo

        result = run_demo(DemoSettings(eval_tokens=eval_tokens, rounds=rounds), progress=RichProgress(not as_json))
        render(result, as_json=as_json)
    else:
        import inspect

        from slipstream.cli.auto import auto_cmd

        # `slipstream auto`'s own defaults for every option the demo does not set (typer keeps them in OptionInfo)
        defaults = {name: getattr(p.default, "default", p.default)
                    for name, p in inspect.signature(auto_cmd).parameters.items()}
        auto_cmd(**defaults | dict(model=MODEL, max_drop=max_drop, metric="perplexity", max_kl=max_kl,
                                   objective=objective, budget=budget, device="cpu", include=[], exclude=[],
                                   report=report, as_json=as_json))
    if not as_json:
        err.print(f"demo finished in {time.perf_counter() - start:.0f} s")
        out.print(f"open {report} in a browser" if not compare_only else "", highlight=False)

"""``slipstream lm-eval VARIANT --tasks ...``: run lm-evaluation-harness tasks on a slipstream variant."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from slipstream.cli.output import print_json, stdout_to_stderr, table


def lm_eval_cmd(
    variant: str = typer.Argument(..., help="Model or variant in the store"),
    tasks: str = typer.Option(..., "--tasks", help="Comma-separated lm-eval task names"),
    include_path: Optional[Path] = typer.Option(None, "--include-path", help="Folder of extra lm-eval task YAMLs"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N documents per task"),
    num_fewshot: Optional[int] = typer.Option(None, "--num-fewshot"),
    threads: Optional[int] = typer.Option(None, "--threads"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Evaluate VARIANT with lm-evaluation-harness (the 'lm-eval' extra) through slipstream's engine."""
    from slipstream.evaluation.lm_eval_adapter import SlipstreamLM, lm_eval

    from lm_eval.tasks import TaskManager

    with stdout_to_stderr():  # stdout holds the result alone; progress and lm-eval's prints go to stderr
        model = SlipstreamLM(variant, threads=threads)
        manager = TaskManager(include_path=str(include_path) if include_path else None)
        results = lm_eval.simple_evaluate(model=model, tasks=tasks.split(","), task_manager=manager, limit=limit,
                                          num_fewshot=num_fewshot)
    scores = results["results"]
    if as_json:
        print_json(scores)
        return
    rows = []
    for task, metrics in scores.items():
        for key, value in metrics.items():
            if isinstance(value, float) and "stderr" not in key:
                stderr = metrics.get(key.replace(",", "_stderr,", 1))
                rows.append([task, key, f"{value:.4f}", f"{stderr:.4f}" if isinstance(stderr, float) else ""])
    table(f"lm-evaluation-harness on {variant}", ["task", "metric", "value", "stderr"], rows)

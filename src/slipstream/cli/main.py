"""Entry point: ``slipstream [--home DIR] COMMAND ...``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from slipstream.cli import (adapters, auto, bench, compare, demo, deploy, evaluate, lm_eval, models, optimize, platform,
                            report, serve, techniques)

app = typer.Typer(
    name="slipstream",
    help="Make transformer models fast and cheap to serve, and prove what each speed-up costs in accuracy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(models.app, name="models")
app.add_typer(adapters.app, name="adapters")
app.command("techniques")(techniques.techniques_cmd)
app.command("optimize")(optimize.optimize_cmd)
app.command("evaluate")(evaluate.evaluate_cmd)
app.command("bench")(bench.bench_cmd)
app.command("compare")(compare.compare_cmd)
app.command("demo")(demo.demo_cmd)
app.command("lm-eval")(lm_eval.lm_eval_cmd)
app.command("report")(report.report_cmd)
app.command("serve")(serve.serve_cmd)
app.command("auto")(auto.auto_cmd)
app.command("deploy")(deploy.deploy_cmd)
app.command("platform")(platform.platform_cmd)


@app.callback()
def _root(
    home: Optional[Path] = typer.Option(
        None, "--home", help="State directory (models, variants, registry). Default: $SLIPSTREAM_HOME or ~/.slipstream"
    ),
) -> None:
    if home is not None:
        os.environ["SLIPSTREAM_HOME"] = str(home)


def main() -> None:
    from slipstream.errors import SlipstreamError

    # slipstream draws its own progress bars; the libraries' tqdm bars would interleave with them.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        app()
    except SlipstreamError as exc:
        from slipstream.cli.output import err

        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

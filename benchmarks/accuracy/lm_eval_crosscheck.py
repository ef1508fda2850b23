"""Cross-check (issue 4): slipstream's ARC accuracy vs lm-evaluation-harness on the same model and data.

lm-eval runs its own Hugging Face backend (``--model hf``) on the imported model directory, reading
the bundled ARC test file through a task YAML identical to lm-eval's arc_easy except for the data
source; slipstream runs ``evaluate --task arc_easy`` on the same model through its transformers engine.

    SLIPSTREAM_HOME=/tmp/bench-home .venv/bin/python benchmarks/accuracy/lm_eval_crosscheck.py --subset Easy [--limit N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from slipstream.evaluation.lm_eval_tasks import write_arc_task
from slipstream.evaluation.run import EvalSettings, evaluate
from slipstream.models.intake import import_model
from slipstream.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import results_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--subset", default="Easy")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", type=Path, default=results_dir())
    args = ap.parse_args()

    import lm_eval
    from lm_eval.tasks import TaskManager

    store = Store()
    if not store.exists(args.model):
        import_model(args.model, store=store)
    path = store.get(args.model).path
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        task = write_arc_task(Path(tmp), args.subset, args.limit)
        theirs = lm_eval.simple_evaluate(
            model="hf", model_args=f"pretrained={path},dtype=float32", tasks=[task],
            task_manager=TaskManager(include_path=tmp), limit=args.limit, batch_size=args.batch_size, device="cpu",
        )["results"][task]
    lm_eval_s = time.time() - start
    ours = evaluate(args.model, reference=None, store=store,
                    settings=EvalSettings(task=f"arc_{args.subset.lower()}", limit=args.limit,
                                          batch_size=args.batch_size)).metrics
    record = {
        "model": args.model, "subset": args.subset, "items": ours["items"], "lm_eval_version": lm_eval.__version__,
        "lm_eval": {"acc": theirs["acc,none"], "acc_norm": theirs["acc_norm,none"],
                    "acc_stderr": theirs["acc_stderr,none"], "seconds": round(lm_eval_s)},
        "slipstream": {"acc": ours["acc"], "acc_norm": ours["acc_norm"], "acc_stderr": ours["acc_stderr"]},
    }
    record["difference_points"] = {k: round(100 * (ours[k] - theirs[f"{k},none"]), 3) for k in ("acc", "acc_norm")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"lm_eval_crosscheck_arc_{args.subset.lower()}.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

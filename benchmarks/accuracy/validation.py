"""Validation benchmark (issue 4): the original and each CTranslate2 variant on every built-in task.

    SLIPSTREAM_HOME=/tmp/demohome .venv/bin/python benchmarks/accuracy/validation.py --flores-limit 200

Perplexity/KL/top-1 on the first --eval-tokens WikiText-2 test tokens, ARC-Easy and ARC-Challenge
(all items), FLORES-200 en->de and en->fr (first --flores-limit sentences, chat prompt, greedy).
Writes benchmarks/results/<machine>/validation.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from slipstream.demo import MODEL, RECIPES
from slipstream.evaluation.run import EvalSettings, evaluate, evaluate_many
from slipstream.models.intake import import_model
from slipstream.pipeline import build
from slipstream.store import Store
from slipstream.techniques.registry import make_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import result_path  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval-tokens", type=int, default=32768)
    ap.add_argument("--arc-limit", type=int, default=None)
    ap.add_argument("--flores-limit", type=int, default=200)
    ap.add_argument("--out", type=Path, default=result_path("validation.json"))
    args = ap.parse_args()

    store = Store()
    if not store.exists(MODEL):
        import_model(MODEL, store=store)
    variants = [build(MODEL, [make_config(t, o) for t, o in recipe], store=store).name for recipe in RECIPES]
    names = [MODEL, *variants]
    table: dict[str, dict] = {n: {} for n in names}
    timings = {}

    start = time.time()
    ppl = EvalSettings(task="wikitext2", max_tokens=args.eval_tokens)
    for r in evaluate_many(variants, reference=MODEL, settings=ppl, store=store):
        table[r.variant] |= {k: r.metrics[k] for k in ("perplexity", "kl_mean", "top1_agreement")}
        table[MODEL] |= {"perplexity": r.reference_metrics["perplexity"]}
    timings["wikitext2"] = time.time() - start
    for task, limit in (("arc_easy", args.arc_limit), ("arc_challenge", args.arc_limit),
                        ("flores_en_de", args.flores_limit), ("flores_en_fr", args.flores_limit)):
        start = time.time()
        for name in names:
            m = evaluate(name, reference=None, settings=EvalSettings(task=task, limit=limit), store=store).metrics
            if task.startswith("arc"):
                table[name] |= {f"{task}.acc": m["acc"], f"{task}.acc_norm": m["acc_norm"],
                                f"{task}.items": m["items"], f"{task}.acc_norm_stderr": m["acc_norm_stderr"]}
            else:
                table[name] |= {f"{task}.chrf": m["chrf"], f"{task}.bleu": m["bleu"], f"{task}.items": m["items"],
                                f"{task}.chrf_ci95": m["chrf_ci95_halfwidth"]}
        timings[task] = time.time() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)}, "results": table,
                                    "seconds": timings}, indent=2))
    head = ["variant", "WikiText-2 ppl", "KL", "top-1", "ARC-E acc", "ARC-E acc_norm", "ARC-C acc", "ARC-C acc_norm",
            "FLORES en-de chrF", "FLORES en-fr chrF"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for n in names:
        t = table[n]
        cells = [n, f"{t['perplexity']:.3f}", f"{t.get('kl_mean', 0):.4f}" if n != MODEL else "—",
                 f"{t.get('top1_agreement', 1):.1%}" if n != MODEL else "—",
                 f"{t['arc_easy.acc']:.4f}", f"{t['arc_easy.acc_norm']:.4f}", f"{t['arc_challenge.acc']:.4f}",
                 f"{t['arc_challenge.acc_norm']:.4f}", f"{t['flores_en_de.chrf']:.2f}", f"{t['flores_en_fr.chrf']:.2f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""Where W8A8 int8 loses its accuracy: each module kind's share, simulated in float32.

Loads a model from the store, smooths it as the w8a8 technique does (SmoothQuant, ``--alpha``, on the
same calibration text: WikiText-2 *valid*), then simulates W8A8 in float32: each linear's weights
rounded to int8 with one scale per output channel (round to nearest; the technique's GPTQ does a
little better) and its input rounded to int8 with one scale per token at run time, the scheme
compressed-tensors' W8A8 checkpoints run with (scales max|x| / 127 here, symmetric; compressed-tensors
divides by 127.5 and clamps to -128..127, 0.4% apart). The head stays float, as in the technique,
unless ``--head`` (CTranslate2's int8 quantizes it too).

For each ``--keep`` set (module kinds left entirely in float, weights and input: what ``w8a8 -o
keep_float=...`` does; with ``--weights float`` every weight stays float, the activations' share alone),
with only the weights in int8 (``weights-only``) and with only the activations (``activations-only``),
it reports on the first
``--tokens`` tokens of WikiText-2 test, against the float32 model in the same windows (1,024 tokens,
stride 512, BOS first, as ``slipstream evaluate`` scores): KL, top-1 agreement and the perplexity
change with its paired 95% interval.

Usage (prints a table, writes --out):
    SLIPSTREAM_HOME=/tmp/home taskset -c 0 .venv/bin/python benchmarks/accuracy/w8a8_sensitivity.py --model gemma3-270m \\
        --out benchmarks/results/<machine>/w8a8_sensitivity-gemma3-270m.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from slipstream.machine import describe_machine

# the decoder linears W8A8 quantizes (the head stays float), by kind: the name suffixes each covers
KINDS = {"qkv": ("q_proj", "k_proj", "v_proj"), "o": ("o_proj",), "gate/up": ("gate_proj", "up_proj"),
         "down": ("down_proj",)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--alpha", type=lambda v: v if v == "auto" else float(v), default=0.8,
                    help="SmoothQuant's alpha; 0: no smoothing; auto: chosen per group (smoothquant alpha=auto)")
    ap.add_argument("--search-samples", type=int, default=8, help="with --alpha auto: the samples searched on")
    ap.add_argument("--smooth-head", action="store_true",
                    help="smooth the head's input too (smoothquant lm_head=true; unties a tied head)")
    ap.add_argument("--samples", type=int, default=128, help="calibration samples (the w8a8 default)")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--keep", nargs="*", default=["", "qkv", "o", "gate/up", "down", "qkv,down", "qkv,o"],
                    help="comma-separated kinds left in float per row ('' : none)")
    ap.add_argument("--weights", choices=["rtn", "float"], default="rtn",
                    help="the --keep rows' weights: int8 by round to nearest, or float (activations alone)")
    ap.add_argument("--head", action="store_true",
                    help="simulate the output head in int8 too, as CTranslate2's int8 runs it (kind 'head'; "
                         "where the head is tied to the embedding, the embedding's weights are rounded with it)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import torch

    from slipstream.calibration import Calibration
    from slipstream.tokenizer import Tokenizer
    from slipstream.evaluation.data import text_set
    from slipstream.evaluation.perplexity import (DivergenceAccumulator, NLLAccumulator, paired_change,
                                                  plan_windows, scored_rows)
    from slipstream.store import Store
    from slipstream.techniques.hf_io import load_model
    from slipstream.techniques.quantize.int8_sensitivity import Int8Simulation
    from slipstream.techniques.quantize.smoothquant import calibrate_and_smooth

    src = Path(Store().get(args.model).path)
    tokenizer = Tokenizer.from_dir(src)
    prefix = tokenizer.bos_prefix()
    tokens = tokenizer.encode(text_set("wikitext2"), add_special_tokens=False)[: args.tokens]
    windows = plan_windows(len(tokens), 1024 - len(prefix), 512)
    reference = load_model(src)
    model = load_model(src)
    start = time.perf_counter()
    chosen = {}
    if args.alpha:
        chosen = calibrate_and_smooth(model, src, Calibration("wikitext2-valid", args.samples, 512), args.alpha,
                                      lm_head=args.smooth_head, search_samples=args.search_samples)
    smoothing_s = time.perf_counter() - start
    kinds = KINDS | ({"head": ("lm_head",)} if args.head else {})
    sim = Int8Simulation(model, [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                                 and any(n == s or n.endswith("." + s) for kind in kinds.values() for s in kind)])
    rtn = args.weights == "rtn"
    rows = [("weights-only", set(), False, True), ("activations-only", set(), True, False)] + \
        [(k or "none", set(filter(None, k.split(","))), True, rtn) for k in args.keep]
    ref_nll, nll = NLLAccumulator(), {label: NLLAccumulator() for label, *_ in rows}
    div = {label: DivergenceAccumulator() for label, *_ in rows}

    def logprobs(m, ids):
        with torch.inference_mode():
            return torch.log_softmax(m(input_ids=torch.tensor([ids])).logits[0].float(), -1).numpy()

    for i, w in enumerate(windows):
        ids = prefix + tokens[w.begin:w.end]
        targets = tokens[w.begin:w.end]
        ref = logprobs(reference, ids)[len(prefix):]
        ref_rows, ref_tok = scored_rows(w, ref, targets)
        ref_nll.add(ref_tok)
        for label, keep, activations, weights in rows:
            sim.set([s for kind in keep for s in kinds[kind]], activations, weights)
            cand_rows, cand_tok = scored_rows(w, logprobs(model, ids)[len(prefix):], targets)
            nll[label].add(cand_tok)
            div[label].add(ref_rows, cand_rows)
        print(f"window {i + 1}/{len(windows)}", flush=True)

    results = []
    for label, keep, activations, weights in rows:
        change = paired_change(nll[label], ref_nll)
        d = div[label].result()
        results.append({"keep_float": sorted(keep), "activations_int8": activations, "weights_int8": weights, "label": label,
                        "kl": d["kl_mean"], "top1_agreement": d["top1_agreement"],
                        "perplexity_change": change["perplexity_ratio"] - 1,
                        "perplexity_change_ci95": [r - 1 for r in change["perplexity_ratio_ci95"]]})
        lo, hi = results[-1]["perplexity_change_ci95"]
        print(f"{label:>14}  KL {d['kl_mean']:.4f}  top-1 {d['top1_agreement']:.1%}  "
              f"ppl {results[-1]['perplexity_change']:+.2%} ({lo:+.2%} to {hi:+.2%})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "model": args.model, "weights": args.weights, "head_int8": args.head, "alpha": args.alpha,
        "head_smoothed": args.smooth_head,
        "calibration_samples": args.samples, "tokens": len(tokens),
        "reference_perplexity": ref_nll.result()["perplexity"], "smoothing_seconds": round(smoothing_s, 1),
        "machine": describe_machine(), "rows": results} | chosen, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""What a bfloat16 key/value cache costs and gains in the continuous batch (issue 7), engine only.

Accuracy: ``--prompts`` MT-bench chat prompts decode ``--tokens`` greedy tokens together in one continuous
batch, once with the model's own cache dtype and once with ``--dtype``; per prompt, the steps up to the
first different token see the same context in both runs, so their next-token distributions are compared
there (KL(reference || other), top-1 agreement), and the greedy continuations are compared whole.
Speed: the serving benchmark's workload replayed on the stepper alone (``serving_steps.replay``) with
each cache dtype, in the same process, one after the other.

Usage (prints and writes benchmarks/results/<machine>/kv_cache_dtype.json):
    SLIPSTREAM_HOME=/tmp/home OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/serving/kv_cache_dtype.py \\
        --model smollm2-135m-w8a8-sq0.8-gptq-keep-none --dtype bfloat16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from slipstream.machine import describe_machine

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from common import result_path, write_json  # noqa: E402  (benchmarks/common.py)
from serving_steps import replay  # noqa: E402  (benchmarks/serving/serving_steps.py)


def greedy_logits(engine, prompts: list[list[int]], tokens: int, dtype: str | None,
                  force: dict[int, list] | None = None) -> dict[int, list]:
    """Every prompt's greedy tokens and the log-distributions each was chosen from, all prompts in one
    batch; with ``force``, each prompt continues with those tokens instead (teacher forcing)."""
    import torch

    from slipstream.engines.stepping import StepOutput
    from slipstream.engines.protocol import SamplingParams

    stepper = engine.stepper(kv_cache_dtype=dtype)
    seen: dict[int, list] = {i: [] for i in range(len(prompts))}
    choose = stepper._choose

    def record(s, logits):
        out = choose(s, logits)
        seen[s.seq_id].append((torch.log_softmax(logits.float(), -1), out.token))
        if force is not None:
            s.next_token = force[s.seq_id][len(seen[s.seq_id]) - 1][1]
            out = StepOutput(out.seq_id, s.next_token, out.finish_reason)
        return out

    stepper._choose = record
    for i, p in enumerate(prompts):
        stepper.add(i, p, SamplingParams(max_tokens=tokens, ignore_eos=True))
    while stepper.active:
        stepper.step()
    return seen


def main() -> None:
    import torch

    from slipstream.benchmark.workloads import load_prompts
    from slipstream.engines.loading import open_engine

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-w8a8-sq0.8-gptq-keep-none")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reference", help="also: KL of both caches' distributions to this model's (the original), "
                    "teacher-forced along the reference's own greedy tokens")
    ap.add_argument("--streams", type=int, default=16, help="streams of the speed replay (0: none)")
    ap.add_argument("--out", type=Path, default=result_path("kv_cache_dtype.json"))
    args = ap.parse_args()

    engine = open_engine(args.model, engine="transformers", threads=1)
    prompts = [engine.tokenizer.chat([{"role": "user", "content": p}])
               for p in load_prompts("mt-bench", args.prompts)]
    ref = greedy_logits(engine, prompts, args.tokens, None)
    other = greedy_logits(engine, prompts, args.tokens, args.dtype)
    kls, agree, identical, first_diff = [], [], 0, []
    for i in range(len(prompts)):
        a, b = ref[i], other[i]
        n = next((k for k, (x, y) in enumerate(zip(a, b)) if x[1] != y[1]), len(a))
        identical += n == len(a)
        first_diff.append(n)
        for (la, ta), (lb, _) in zip(a[: n + 1], b[: n + 1]):  # same context up to and including step n
            finite = torch.isfinite(la)  # tokens the sampling rules ruled out (ignore_eos) are -inf in both
            kls.append(float(torch.sum(la[finite].exp() * (la[finite] - lb[finite]))))
            agree.append(int(la.argmax()) == int(lb.argmax()))
    accuracy = {"prompts": len(prompts), "tokens": args.tokens, "identical_continuations": identical,
                "first_difference_median": float(np.median(first_diff)), "steps_compared": len(kls),
                "kl_mean": float(np.mean(kls)), "kl_p99": float(np.percentile(kls, 99)),
                "top1_agreement": float(np.mean(agree))}
    print(f"{args.dtype} cache against {engine.model.dtype}: {identical}/{len(prompts)} greedy continuations "
          f"identical over {args.tokens} tokens; KL mean {accuracy['kl_mean']:.2e} (p99 {accuracy['kl_p99']:.2e}) "
          f"over {len(kls)} same-context steps; top-1 agreement {accuracy['top1_agreement']:.4f}", flush=True)
    if args.reference:
        original = open_engine(args.reference, engine="transformers", threads=1)
        truth = greedy_logits(original, prompts, args.tokens, None)
        accuracy["against_reference"] = {"reference": args.reference}
        for label, dtype in (("model", None), (args.dtype, args.dtype)):
            forced = greedy_logits(engine, prompts, args.tokens, dtype, force=truth)
            kl = []
            for i in truth:
                for (la, _), (lb, _) in zip(truth[i], forced[i]):
                    finite = torch.isfinite(la)
                    kl.append(float(torch.sum(la[finite].exp() * (la[finite] - lb[finite]))))
            agree = [int(la.argmax()) == int(lb.argmax()) for i in truth for (la, _), (lb, _) in zip(truth[i], forced[i])]
            accuracy["against_reference"][label] = {"kl_mean": float(np.mean(kl)), "top1_agreement": float(np.mean(agree))}
            print(f"against {args.reference}, teacher-forced, {label} cache: KL mean {np.mean(kl):.4f}, "
                  f"top-1 agreement {np.mean(agree):.4f} over {len(kl)} steps", flush=True)
    speed = {}
    for label, dtype in (("model", None), (args.dtype, args.dtype)) if args.streams else ():
        speed[label] = replay(engine, args.streams, kv_cache_dtype=dtype)
        r = speed[label]
        print(f"replay at {args.streams} streams, {label} cache: {r['tokens_per_s']:.1f} tokens/s, mean step "
              f"{r['mean_step_s'] * 1e3:.1f} ms, TPOT p50 / p95 {r['tpot_s']['p50'] * 1e3:.1f} / "
              f"{r['tpot_s']['p95'] * 1e3:.1f} ms", flush=True)
    record = {"machine": describe_machine(), "model": args.model, "engine": engine.info().details,
              "dtype": args.dtype, "model_dtype": str(engine.model.dtype), "accuracy": accuracy, "replay": speed}
    write_json(args.out, record)


if __name__ == "__main__":
    main()

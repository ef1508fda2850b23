"""lm-evaluation-harness task definitions over slipstream's bundled files, for offline runs.

lm-eval's own ``arc_easy``/``arc_challenge`` read the ``allenai/ai2_arc`` dataset from the hub. These
tasks are the same YAML (prompt, choices, target, metrics) reading the bundled ARC test files
instead, so lm-eval and slipstream score exactly the same items.
"""

from __future__ import annotations

import json
from pathlib import Path

from slipstream.evaluation.datasets import DATA, read_jsonl

_TEMPLATE = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices.label.index(answerKey)}}}}"
doc_to_choice: "{{{{choices.text}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def write_arc_task(directory: Path, subset: str = "Easy", limit: int | None = None) -> str:
    """Write ARC-``subset`` test items in the hub dataset's layout plus a task YAML into ``directory``;
    return the task name (``arc_easy_local`` or ``arc_challenge_local``)."""
    directory.mkdir(parents=True, exist_ok=True)
    task = f"arc_{subset.lower()}_local"
    data = directory / f"{task}.jsonl"
    with data.open("w") as f:
        for n, (_, r) in enumerate(read_jsonl(DATA / "arc" / f"ARC-{subset}-Test.jsonl")):
            if limit is not None and n >= limit:
                break
            q = r["question"]
            f.write(json.dumps({"id": r["id"], "question": q["stem"], "answerKey": r["answerKey"],
                                "choices": {"text": [c["text"] for c in q["choices"]],
                                            "label": [c["label"] for c in q["choices"]]}}) + "\n")
    (directory / f"{task}.yaml").write_text(_TEMPLATE.format(task=task, data=data.resolve()))
    return task

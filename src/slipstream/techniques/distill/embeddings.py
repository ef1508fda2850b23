"""Distillation of an embedding model: the student (say, a pruned encoder) learns to give the teacher's
sentence embeddings, pooled as the model's pipeline says, by minimising one minus their cosine on sentences
of the training text (one line each, cut to ``sequence_length`` tokens). ``distill``'s path for models whose
task is ``embedding``; its budget (``steps``, ``minutes``), batch and learning-rate settings apply. No
checkpoints: a run takes minutes.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from slipstream.errors import InvalidConfig
from slipstream.progress import Progress, or_null


def sentences(config: Any, tokenizer: Any) -> list[list[int]]:
    from slipstream.calibration import Calibration

    if config.data.startswith("teacher:"):
        raise InvalidConfig("distill: an embedding model learns from text (wikitext2-valid or file:PATH), not "
                            "from teacher generations")
    out = []
    for line in Calibration(config.data, 1, 2).lines():
        if len(line.split()) >= 4:
            ids = tokenizer.encode(line.strip())
            cut = config.sequence_length
            out.append(ids if len(ids) <= cut else ids[: cut - 1] + ids[-1:])
    if len(out) < config.batch_size:
        raise InvalidConfig(f"distill: {config.data} has {len(out)} sentences; need at least {config.batch_size}")
    return out


def apply(src: Path, out: Path, config: Any, teacher_dir: Path, device: str = "cpu",
          progress: Progress | None = None) -> dict:
    import torch

    from slipstream.models.pooling import Pooling
    from slipstream.techniques.distill.schedule import warmup_cosine
    from slipstream.techniques.hf_io import load_model, pad_batch, save_model
    from slipstream.tokenizer import Tokenizer

    progress = or_null(progress)
    pooling = Pooling.from_dir(teacher_dir)
    student, teacher = load_model(src, device=device), load_model(teacher_dir, device=device)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    data = sentences(config, Tokenizer.from_dir(src))
    rng = random.Random(config.seed)
    rng.shuffle(data)
    held_out, data = data[:32], data[32:] if len(data) > 64 else data
    pad = int(student.config.pad_token_id or 0)

    def embed(model: Any, seqs: list[list[int]]) -> Any:
        ids, mask = pad_batch(seqs, pad)
        ids, mask = ids.to(device), mask.to(device)
        return pooling.torch(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)

    def agreement() -> float:
        with torch.no_grad():
            student.eval()
            cos = torch.nn.functional.cosine_similarity(embed(student, held_out), embed(teacher, held_out), dim=-1)
            student.train()
            return float(cos.mean())

    before = agreement()
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.learning_rate, weight_decay=0.0)

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config))
    budget = config.minutes * 60 if config.minutes else None
    per_step = config.batch_size * config.accumulation
    step, curve, start, stopped_by = 0, [], time.perf_counter(), "steps"
    student.train()
    with progress.task("distilling the embeddings", total=config.steps) as bar:
        while step < config.steps:
            if budget is not None and time.perf_counter() - start >= budget:
                stopped_by = "minutes"
                break
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for micro in range(config.accumulation):
                first = (step * per_step + micro * config.batch_size) % len(data)
                seqs = [data[(first + k) % len(data)] for k in range(config.batch_size)]
                with torch.no_grad():
                    want = embed(teacher, seqs)
                got = embed(student, seqs)
                loss = (1 - torch.nn.functional.cosine_similarity(got, want, dim=-1)).mean()
                (loss / config.accumulation).backward()
                total += loss.item() / config.accumulation
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            curve.append([step, round(total, 6)])
            bar.update(description=f"distilling the embeddings · loss {total:.5f}")
            bar.advance()
    student.eval()
    after = agreement()
    with progress.task("saving the student"):
        save_model(student, src, out)
    return {"steps": step, "stopped_by": stopped_by, "train_seconds": round(time.perf_counter() - start, 1),
            "loss_first": curve[0][1] if curve else None, "loss_last": curve[-1][1] if curve else None,
            "loss_curve": curve[:: max(1, len(curve) // 50)], "teacher": teacher_dir.name, "data": config.data,
            "training_sentences": len(data), "cosine_held_out_before": round(before, 5),
            "cosine_held_out_after": round(after, 5), "objective": "1 - cosine of pooled embeddings"}

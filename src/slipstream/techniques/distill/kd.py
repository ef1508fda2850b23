"""Knowledge distillation: train a student to match its teacher's output distribution.

The loss is the KL divergence from the teacher's to the student's next-token distribution, both
softened by a temperature ``T`` (scaled by ``T**2``, Hinton et al.), plus, optionally, the mean
squared error between hidden states where their widths match (student layer ``i`` of ``L_s`` is
matched to teacher layer ``round(i * L_t / L_s)``).

Training runs in plain torch on whatever device the variant targets (CPU here, a GPU when present),
with gradient accumulation and a budget of optimizer steps and/or minutes. Every
``checkpoint_every`` steps the student, the optimizer, the schedule, the step count and the random
number generators are written to one file, atomically (write, fsync, rename): a run that is killed
at any moment resumes from its last checkpoint and ends where an uninterrupted run would have.

The student is the input variant (a pruned model, or any smaller model with the same tokenizer);
the teacher is by default the original model the student descends from (``teacher="root"``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from slipstream.errors import InvalidConfig, NotFound
from slipstream.progress import Progress, or_null
from slipstream.config import TechniqueConfig
from slipstream.techniques.distill import data as training_data

CHECKPOINT = "checkpoint.pt"


@dataclasses.dataclass(frozen=True)
class Distill(TechniqueConfig):
    """Train the student (this variant) against a teacher's logits."""

    technique = "distill"
    teacher: str = "root"  # root: the original this variant descends from; or a store name or a directory
    data: str = "wikitext2-valid"  # wikitext2-valid | file:PATH | teacher:vicuna | teacher:mt-bench | teacher:file:PATH
    steps: int = 200  # optimizer steps (upper bound)
    minutes: float | None = None  # wall-clock budget for training; stops at a step boundary
    batch_size: int = 4
    accumulation: int = 2  # micro-batches per optimizer step
    sequence_length: int = 256
    learning_rate: float = 1e-4
    warmup: int = 10  # steps of linear warm-up, then cosine decay to 10%
    temperature: float = 2.0
    hidden_weight: float = 0.0  # weight of the hidden-state MSE (0: logits only)
    checkpoint_every: int = 20
    generate_tokens: int = 192  # teacher:PROMPTS: new tokens per prompt
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        training_data.check_source(self.data)
        for field in ("steps", "batch_size", "accumulation", "checkpoint_every", "generate_tokens"):
            if getattr(self, field) < 1:
                raise InvalidConfig(f"distill: {field} must be at least 1, got {getattr(self, field)}")
        if self.sequence_length < 8:
            raise InvalidConfig(f"distill: sequence_length must be at least 8, got {self.sequence_length}")
        if self.minutes is not None and self.minutes <= 0:
            raise InvalidConfig(f"distill: minutes must be positive, got {self.minutes}")
        if not 0 < self.learning_rate < 1 or self.temperature <= 0 or self.hidden_weight < 0:
            raise InvalidConfig("distill: need 0 < learning_rate < 1, temperature > 0, hidden_weight >= 0")

    def slug(self) -> str:
        budget = f"{self.steps}s" + (f"-{self.minutes:g}m" if self.minutes else "")
        return f"distill-{budget}-" + hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:6]

    def stand_in(self) -> None:
        return None  # training moves weight values only: the student's architecture, and so its speed, stay


# --- teacher, tokenizers ----------------------------------------------------------------------------

def resolve_teacher(student: Path, teacher: str) -> Path:
    """``root``: follow the manifests' parent links from ``student`` to the original model; a name
    in the same store; or a directory."""
    variants = student.parent
    if teacher == "root":
        path = student
        while True:
            manifest = path / "slipstream.json"
            parent = json.loads(manifest.read_text()).get("parent") if manifest.exists() else None
            if not parent:
                break
            path = variants / parent
        if path == student:
            raise InvalidConfig(f"distill: {student.name} has no parent to learn from; name a teacher (teacher=NAME)")
        return path
    for candidate in (variants / teacher, Path(teacher)):
        if (candidate / "config.json").exists():
            return candidate
    raise NotFound(f"distill: teacher {teacher!r} is neither a model in the store nor a model directory")


def check_tokenizers(teacher: Path, student: Path) -> Any:
    """The student learns the teacher's distribution over the *same* tokens: refuse anything else."""
    from slipstream.tokenizer import Tokenizer

    a, b = Tokenizer.from_dir(teacher), Tokenizer.from_dir(student)
    if a._backend.get_vocab() != b._backend.get_vocab():
        raise InvalidConfig(f"distill: teacher {teacher.name} and student {student.name} have different tokenizers "
                            f"(vocabularies of {a.vocab_size} and {b.vocab_size} tokens differ); distillation on "
                            "logits needs the same tokenizer")
    return b


# --- checkpoints ------------------------------------------------------------------------------------

def save_checkpoint(path: Path, state: dict) -> None:
    import torch

    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (CHECKPOINT + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path / CHECKPOINT)


def load_checkpoint(path: Path) -> dict | None:
    import torch

    file = path / CHECKPOINT
    return torch.load(file, weights_only=False) if file.exists() else None


def rng_state() -> dict:
    import torch

    return {"torch": torch.random.get_rng_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    import torch

    torch.random.set_rng_state(state["torch"])
    random.setstate(state["python"])


# --- losses -----------------------------------------------------------------------------------------

def kd_loss(student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    """KL(teacher || student) per token, on temperature-softened distributions, times T**2."""
    import torch.nn.functional as F

    t = temperature
    s = F.log_softmax(student_logits.float() / t, dim=-1)
    p = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(s.flatten(0, -2), p.flatten(0, -2), log_target=True, reduction="batchmean") * t * t


def hidden_loss(student_hidden: tuple, teacher_hidden: tuple) -> Any:
    import torch.nn.functional as F

    ls, lt = len(student_hidden) - 1, len(teacher_hidden) - 1
    terms = [F.mse_loss(student_hidden[i].float(), teacher_hidden[round(i * lt / ls)].float())
             for i in range(1, ls + 1)]
    return sum(terms) / len(terms)


def mean_kl(student: Any, teacher: Any, batch: Any) -> float:
    """Mean per-token KL(teacher || student) at temperature 1 on ``batch`` (for checks and reports)."""
    import torch

    with torch.no_grad():
        return kd_loss(student(input_ids=batch).logits, teacher(input_ids=batch).logits, 1.0).item()


# --- the loop ---------------------------------------------------------------------------------------

def train(student: Any, teacher: Any, sequences: Any, config: Distill, checkpoints: Path,
          progress: Progress | None = None, stop_after: int | None = None) -> dict:
    """Distil ``teacher`` into ``student`` (in place) on ``sequences`` (an [N, L] tensor of token ids).

    Resumes from ``checkpoints`` when it holds a checkpoint of this run. ``stop_after`` ends this
    call after that many optimizer steps (a planned interruption; a kill works the same way).
    Returns facts: steps, tokens, seconds, loss curve, whether a budget ended it.
    """
    import torch

    progress = or_null(progress)
    device = next(student.parameters()).device
    hidden = config.hidden_weight > 0
    if hidden and student.config.hidden_size != teacher.config.hidden_size:
        raise InvalidConfig(f"distill: hidden_weight needs equal hidden sizes; the student's is "
                            f"{student.config.hidden_size}, the teacher's {teacher.config.hidden_size}")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student.train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.learning_rate, weight_decay=0.0)

    from slipstream.techniques.distill.schedule import warmup_cosine

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config))
    identity = {"config": config.to_dict(), "sequences": list(sequences.shape)}
    step, tokens, elapsed, curve, resumed = 0, 0, 0.0, [], None
    state = load_checkpoint(checkpoints)
    if state is not None:
        if state["identity"] != identity:
            raise InvalidConfig(f"distill: the checkpoint in {checkpoints} belongs to a different run; remove it")
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        set_rng_state(state["rng"])
        step, tokens, elapsed, curve = state["step"], state["tokens"], state["elapsed"], state["curve"]
        resumed = step
    else:
        torch.manual_seed(config.seed)

    def checkpoint() -> None:
        save_checkpoint(checkpoints, {
            "identity": identity, "student": student.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "rng": rng_state(), "step": step, "tokens": tokens,
            "elapsed": elapsed, "curve": curve})

    budget_s = config.minutes * 60 if config.minutes else None
    n = sequences.shape[0]
    per_step = config.batch_size * config.accumulation
    stop_reason = "steps"
    start_step = step
    window_tokens, window_start = 0, time.perf_counter()
    cpu_start = time.process_time()
    with progress.task("distilling", total=config.steps) as bar:
        bar.advance(step)
        while step < config.steps:
            if budget_s is not None and elapsed >= budget_s:
                stop_reason = "minutes"
                break
            if stop_after is not None and step - start_step >= stop_after:
                stop_reason = "stopped"
                break
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for micro in range(config.accumulation):
                first = step * per_step + micro * config.batch_size
                index = [training_data.sample_index(k, n, config.seed) for k in range(first, first + config.batch_size)]
                batch = sequences[index].to(device)
                with torch.no_grad():
                    t_out = teacher(input_ids=batch, output_hidden_states=hidden)
                s_out = student(input_ids=batch, output_hidden_states=hidden)
                loss = kd_loss(s_out.logits, t_out.logits, config.temperature)
                if hidden:
                    loss = loss + config.hidden_weight * hidden_loss(s_out.hidden_states, t_out.hidden_states)
                (loss / config.accumulation).backward()
                total += loss.item() / config.accumulation
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            tokens += per_step * sequences.shape[1]
            elapsed += time.perf_counter() - t0
            curve.append([step, round(total, 5)])
            window_tokens += per_step * sequences.shape[1]
            rate = window_tokens / max(time.perf_counter() - window_start, 1e-9)
            bar.update(description=f"distilling · loss {total:.4f} · {rate:,.0f} tok/s")
            bar.advance()
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpoint()
                progress.log(f"step {step}/{config.steps}: loss {total:.4f}, {rate:,.0f} tok/s, "
                             f"{elapsed / 60:.1f} min (checkpoint saved)")
    if stop_reason != "stopped" and step % config.checkpoint_every:
        checkpoint()  # a budget ended it: keep the last state
    student.eval()
    return {"steps": step, "tokens": tokens, "train_seconds": round(elapsed, 1), "stopped_by": stop_reason,
            "cpu_seconds_this_run": round(time.process_time() - cpu_start, 1),
            "load_average": list(os.getloadavg()),
            "resumed_from_step": resumed, "loss_first": curve[0][1] if curve else None,
            "loss_last": curve[-1][1] if curve else None, "loss_curve": curve[:: max(1, len(curve) // 50)]}


def training_sequences(config: Distill, tokenizer: Any, teacher: Any, checkpoints: Path, progress: Progress) -> Any:
    probe = tokenizer.encode("a")
    prefix = probe[:1] if len(probe) > len(tokenizer.encode("a", add_special_tokens=False)) else []
    if config.data.startswith("teacher:"):
        stream = training_data.teacher_tokens(config.data, teacher, tokenizer, checkpoints / "generations.json",
                                              config.generate_tokens, config.seed, progress)
    else:
        need = config.steps * config.batch_size * config.accumulation * config.sequence_length
        stream = training_data.text_tokens(config.data, tokenizer, need)
    return training_data.chunks(stream, config.sequence_length, prefix)


def checkpoint_dir(src: Path, config: Distill) -> Path:
    """Beside the store's variants (``<home>/checkpoints/<student>-<slug>``), so it outlives staging."""
    return src.parent.parent / "checkpoints" / f"{src.name}-{config.slug()}"


def apply(src: Path, out: Path, config: Distill, device: str = "cpu", progress: Progress | None = None,
          stop_after: int | None = None) -> dict:
    import shutil

    from slipstream.techniques.hf_io import load_model, save_model

    progress = or_null(progress)
    teacher_dir = resolve_teacher(src, config.teacher)
    tokenizer = check_tokenizers(teacher_dir, src)
    from slipstream.models.tasks import detect

    if detect(src) == "embedding":
        from slipstream.techniques.distill import embeddings

        return embeddings.apply(src, out, config, teacher_dir, device, progress)
    checkpoints = checkpoint_dir(src, config)
    with progress.task(f"loading student {src.name} and teacher {teacher_dir.name}"):
        student = load_model(src, device=device)
        teacher = load_model(teacher_dir, device=device)
    sequences = training_sequences(config, tokenizer, teacher, checkpoints, progress)
    held_out = sequences[-min(4, len(sequences)):]  # last sequences: KL before and after, for the record
    kl_before = mean_kl(student, teacher, held_out.to(device))
    facts = train(student, teacher, sequences, config, checkpoints, progress, stop_after)
    kl_after = mean_kl(student, teacher, held_out.to(device))
    if facts["stopped_by"] == "stopped":
        raise InterruptedError(f"distill stopped after step {facts['steps']}; run again to resume from {checkpoints}")
    with progress.task("saving the student"):
        save_model(student, src, out)
    shutil.rmtree(checkpoints, ignore_errors=True)  # finished: the variant holds the result
    return facts | {"teacher": teacher_dir.name, "data": config.data, "training_sequences": len(sequences),
                    "kl_sample_before": round(kl_before, 5), "kl_sample_after": round(kl_after, 5),
                    "device": device, "threads": _threads()}


def _threads() -> int:
    import torch

    return torch.get_num_threads()

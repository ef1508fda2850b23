"""Distillation lowers the KL to the teacher, survives a kill, and refuses mismatched tokenizers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from slipstream.errors import InvalidConfig
from slipstream.progress import NullProgress
from slipstream.store.manifest import Manifest
from slipstream.techniques.distill.kd import Distill, check_tokenizers, mean_kl, train, training_sequences

SMALL = {"batch_size": 2, "sequence_length": 32, "learning_rate": 2e-3, "warmup": 2, "temperature": 1.0}


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_llama_dir):
    """The tiny Llama as teacher and a structured-pruned copy of it as student (directories)."""
    import torch

    from slipstream.techniques.hf_io import load_model
    from slipstream.techniques.prune.structured import StructuredPrune, prune_model

    student_dir = tmp_path_factory.mktemp("student")
    model = load_model(tiny_llama_dir)
    batches = [torch.randint(3, 512, (1, 32), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    prune_model(model, StructuredPrune(layers=0.5, mlp=0.25, samples=2, sequence_length=32), batches)
    model.save_pretrained(student_dir)
    for f in tiny_llama_dir.iterdir():
        if f.name.startswith(("tokenizer", "special")):
            shutil.copy2(f, student_dir / f.name)
    return tiny_llama_dir, student_dir


def _setup(pair, tmp_path, **options):
    from slipstream.tokenizer import Tokenizer
    from slipstream.techniques.hf_io import load_model

    teacher_dir, student_dir = pair
    config = Distill(**(SMALL | options))
    teacher, student = load_model(teacher_dir), load_model(student_dir)
    sequences = training_sequences(config, Tokenizer.from_dir(student_dir), teacher, tmp_path, NullProgress())
    return config, teacher, student, sequences


def test_distillation_lowers_kl_to_the_teacher(pair, tmp_path):
    config, teacher, student, sequences = _setup(pair, tmp_path, steps=30, learning_rate=4e-3)
    held_out = sequences[-4:]  # never trained on: the first steps * batch * accumulation of the sequences come first
    assert len(sequences) > 40
    before = mean_kl(student, teacher, held_out)
    facts = train(student, teacher, sequences[:-4], config, tmp_path / "ckpt")
    after = mean_kl(student, teacher, held_out)
    assert facts["steps"] == 30 and facts["tokens"] == 30 * 2 * 2 * 32
    assert after < 0.85 * before, (before, after)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_after_a_stop_reaches_the_uninterrupted_state(pair, tmp_path):
    from slipstream.techniques.hf_io import load_model

    config, teacher, student, sequences = _setup(pair, tmp_path, steps=6, checkpoint_every=3)
    train(student, teacher, sequences, config, tmp_path / "straight")
    straight = _state(student)

    interrupted = load_model(pair[1])
    first = train(interrupted, teacher, sequences, config, tmp_path / "resumed", stop_after=3)
    assert first["stopped_by"] == "stopped" and first["steps"] == 3
    resumed = load_model(pair[1])  # a fresh process would start from the student's files again
    second = train(resumed, teacher, sequences, config, tmp_path / "resumed")
    assert second["resumed_from_step"] == 3 and second["steps"] == 6
    for key, value in straight.items():
        assert resumed.state_dict()[key].equal(value), key


KILLED = """
import os, signal, sys, torch
from pathlib import Path
from slipstream.tokenizer import Tokenizer
from slipstream.techniques.distill.kd import Distill, train, training_sequences
from slipstream.techniques.hf_io import load_model
from slipstream.progress import NullProgress

class KillAfterCheckpoint(NullProgress):
    def log(self, message):
        if message.startswith("step 4/"):
            os.kill(os.getpid(), signal.SIGKILL)

teacher_dir, student_dir, work = map(Path, sys.argv[1:4])
config = Distill(**{config})
teacher, student = load_model(teacher_dir), load_model(student_dir)
sequences = training_sequences(config, Tokenizer.from_dir(student_dir), teacher, work, NullProgress())
train(student, teacher, sequences, config, work / "ckpt", KillAfterCheckpoint())
"""


def test_a_killed_run_resumes_from_its_checkpoint(pair, tmp_path):
    """SIGKILL right after the step-4 checkpoint; the resumed run ends where an uninterrupted one does."""
    import torch

    from slipstream.techniques.hf_io import load_model

    options = SMALL | {"steps": 6, "checkpoint_every": 2}
    script = tmp_path / "killed.py"
    script.write_text(KILLED.replace("{config}", repr(options)))
    torch_threads = torch.get_num_threads()
    run = subprocess.run([sys.executable, str(script), str(pair[0]), str(pair[1]), str(tmp_path)],
                         env={"OMP_NUM_THREADS": str(torch_threads), "PATH": "/usr/bin:/bin",
                              "HF_HUB_OFFLINE": "1"}, capture_output=True, timeout=300)
    assert run.returncode == -9, run.stderr.decode()[-2000:]
    assert torch.load(tmp_path / "ckpt" / "checkpoint.pt", weights_only=False)["step"] == 4

    config, teacher, student, sequences = _setup(pair, tmp_path, **{k: options[k] for k in ("steps", "checkpoint_every")})
    facts = train(student, teacher, sequences, config, tmp_path / "ckpt")
    assert facts["resumed_from_step"] == 4
    straight = load_model(pair[1])
    train(straight, teacher, sequences, config, tmp_path / "straight")
    for key, value in straight.state_dict().items():
        assert torch.allclose(student.state_dict()[key], value, atol=1e-6), key


def test_prune_then_distill_recipe_with_teacher_generations(tmp_path, tiny_llama_dir):
    """Prune, distill, CTranslate2 int8 through pipeline.build: teacher = the original (root), data =
    its own answers to a bundled prompt set."""
    from slipstream.models.intake import import_model
    from slipstream.pipeline import build
    from slipstream.store import Store
    from slipstream.techniques.registry import make_config

    store = Store(tmp_path / "home")
    import_model(str(tiny_llama_dir), "tiny", store=store)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is the capital of France?\nName a prime number.\nWhy is the sky blue?\n"
                       "Tell me about rivers.\nWrite a line about the sea.\n")
    source = f"teacher:file:{prompts}"
    steps = [make_config("prune-structured", {"layers": 0.5, "samples": 2, "sequence_length": 32}),
             make_config("distill", SMALL | {"steps": 4, "data": source, "generate_tokens": 24, "batch_size": 1})]
    pytest.importorskip("ctranslate2")
    quantized = build("tiny", [*steps, make_config("ctranslate2", {"quantization": "int8"})], store=store)
    assert quantized.format == "ctranslate2" and (quantized.path / "model.bin").exists()
    variant = store.get(quantized.parent)
    facts = Manifest.read(variant.path).extra["facts"]
    assert facts["teacher"] == "tiny" and facts["steps"] == 4 and facts["data"] == source
    assert facts["kl_sample_after"] < facts["kl_sample_before"]
    assert variant.parameters == store.get(variant.parent).parameters  # distillation keeps the shape
    assert not (store.home / "checkpoints" / f"{variant.parent}-{steps[1].slug()}").exists()


def test_different_tokenizers_are_refused(pair, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(pair[1], other)
    tok = json.loads((other / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = list(vocab)[10], list(vocab)[11]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (other / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(InvalidConfig, match="different tokenizers"):
        check_tokenizers(pair[0], other)
    check_tokenizers(pair[0], pair[1])  # the same tokenizer passes


def test_bad_options_are_refused():
    with pytest.raises(InvalidConfig, match="evaluation text"):
        Distill(data="wikitext2")
    with pytest.raises(InvalidConfig, match="unknown prompt set"):
        Distill(data="teacher:nope")
    with pytest.raises(InvalidConfig, match="steps"):
        Distill(steps=0)
    with pytest.raises(InvalidConfig, match="minutes"):
        Distill(minutes=0)

"""LoRA adapters, trained here with PEFT on the tiny random Llama in seconds: imported beside their base after
checks against it (refusals named in one line), listed, and merged into the base so that the merged model's
logits equal PEFT's base-plus-adapter logits."""

from __future__ import annotations

import json
import shutil

import pytest

peft = pytest.importorskip("peft")
torch = pytest.importorskip("torch")


def train_lora(base_dir, out, *, r=4, alpha=8, targets=("q_proj", "v_proj"), seed=0, steps=8, text="hello world",
               **extra):
    """A LoRA adapter trained for a few steps on one text (so B is not zero and the adapter changes the
    output), saved as PEFT saves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets),
                                             lora_dropout=0.0, task_type="CAUSAL_LM", **extra))
    ids = torch.tensor([[1 + (i * 7 + seed) % 50 for i in range(16)]])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_llama_dir):
    return train_lora(tiny_llama_dir, tmp_path_factory.mktemp("lora") / "a")


@pytest.fixture
def based(store, tiny_llama_dir):
    from slipstream.models.intake import import_model

    import_model(str(tiny_llama_dir), "tiny", store=store)
    return store


def test_import_checks_and_lists_an_adapter(based, adapter_dir):
    from slipstream.models.adapters import adapters_of, import_adapter

    a = import_adapter(adapter_dir, "tiny", "tiny-lora", store=based)
    assert (a.kind, a.format, a.parent) == ("adapter", "peft-lora", "tiny")
    assert a.technique["rank"] == 4 and a.technique["target_modules"] == ["q_proj", "v_proj"]
    assert a.technique["modules"] == 2 * 2  # two layers x two target modules
    assert sorted(p.name for p in a.path.iterdir() if p.name != "slipstream.json") == [
        "adapter_config.json", "adapter_model.safetensors"]
    assert [v.name for v in adapters_of(based, "tiny")] == ["tiny-lora"]
    assert adapters_of(based, "other") == []


def test_merged_adapter_equals_peft_on_the_base(based, adapter_dir, tiny_llama_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from slipstream.models.adapters import import_adapter, merge_adapter

    import_adapter(adapter_dir, "tiny", "tiny-lora", store=based)
    merged = merge_adapter("tiny-lora", store=based)
    assert (merged.name, merged.kind, merged.format, merged.parent) == ("tiny-lora-merged", "variant", "hf", "tiny")
    assert merged.technique["technique"] == "merge-lora" and merged.technique["adapter"] == "tiny-lora"
    ids = torch.tensor([[3, 14, 15, 9, 26, 5, 35]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
        plain = base(ids).logits
        theirs = PeftModel.from_pretrained(base, adapter_dir)(ids).logits
        ours = AutoModelForCausalLM.from_pretrained(merged.path, dtype=torch.float32)(ids).logits
    assert (theirs - plain).abs().max() > 1e-3  # the adapter changes the output...
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()  # ...and merging keeps it
    from slipstream.pipeline import optimize

    cast = optimize(merged.name, "cast", {"dtype": "bfloat16"}, store=based)  # any technique takes the fine-tune
    assert cast.parent == "tiny-lora-merged" and based.get(cast.parent).parent == "tiny"


def test_rslora_scaling_is_merged_as_peft_applies_it(based, tiny_llama_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from slipstream.models.adapters import import_adapter, merge_adapter

    d = train_lora(tiny_llama_dir, tmp_path / "rs", r=8, alpha=4, targets=("o_proj", "down_proj"), seed=1,
                   use_rslora=True)
    import_adapter(d, "tiny", "rs", store=based)
    merged = merge_adapter("rs", "rs-merged", store=based)
    ids = torch.tensor([[7, 8, 9, 10]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
        theirs = PeftModel.from_pretrained(base, d)(ids).logits
        ours = AutoModelForCausalLM.from_pretrained(merged.path, dtype=torch.float32)(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5)


def _edit(adapter_dir, tmp_path, config=None, drop_weights=False, add=None):
    d = shutil.copytree(adapter_dir, tmp_path / "edited")
    if config:
        cfg = json.loads((d / "adapter_config.json").read_text())
        (d / "adapter_config.json").write_text(json.dumps(cfg | config))
    if drop_weights:
        (d / "adapter_model.safetensors").unlink()
    for name, data in (add or {}).items():
        (d / name).write_bytes(data)
    return d


@pytest.mark.parametrize("edit,named", [
    ({"config": {"use_dora": True}}, "use_dora"),
    ({"config": {"peft_type": "IA3"}}, "peft_type 'IA3'"),
    ({"config": {"modules_to_save": ["lm_head"]}}, "modules_to_save"),
    ({"config": {"bias": "all"}}, "bias='all'"),
    ({"drop_weights": True, "add": {"adapter_model.bin": b"x"}}, "pickled"),
    ({"drop_weights": True}, "no adapter_model.safetensors"),
])
def test_what_is_not_a_plain_safetensors_lora_is_refused_in_one_line(based, adapter_dir, tmp_path, edit, named):
    from slipstream.errors import SlipstreamError
    from slipstream.models.adapters import import_adapter

    with pytest.raises(SlipstreamError, match=named.replace("(", r"\(")) as err:
        import_adapter(_edit(adapter_dir, tmp_path, **edit), "tiny", "x", store=based)
    assert "\n" not in str(err.value)
    assert not based.exists("x")


def test_an_adapter_for_another_base_or_too_high_a_rank_is_refused(based, tiny_llama_dir, tmp_path):
    from tests.conftest import build_tiny_llama

    from slipstream.errors import InvalidModel
    from slipstream.models.adapters import import_adapter

    wider = build_tiny_llama(tmp_path / "wider", hidden=128)
    with pytest.raises(InvalidModel, match=r"q_proj: the adapter updates a 128x128 weight, 'tiny' has 64x64"):
        import_adapter(train_lora(wider, tmp_path / "w", steps=1), "tiny", "x", store=based)
    deeper = build_tiny_llama(tmp_path / "deeper", layers=3)
    with pytest.raises(InvalidModel, match=r"target module model.layers.2.self_attn.q_proj is not in 'tiny'"):
        import_adapter(train_lora(deeper, tmp_path / "d", steps=1), "tiny", "x", store=based)
    with pytest.raises(InvalidModel, match="rank 16 is above the limit of 8"):
        import_adapter(train_lora(tiny_llama_dir, tmp_path / "r", r=16, steps=1), "tiny", "x", store=based,
                       max_rank=8)
    assert [v.name for v in based.list()] == ["tiny"]


def test_the_cli_imports_lists_shows_and_merges(based, adapter_dir, tmp_path):
    from tests.killing import slipstream

    r = slipstream(based.home, "adapters", "import", str(adapter_dir), "--base", "tiny", "--name", "tuned")
    assert r.returncode == 0, r.stderr
    assert "rank 4" in r.stdout and "q_proj, v_proj" in r.stdout
    listed = json.loads(slipstream(based.home, "adapters", "list", "--json").stdout)
    assert [(a["name"], a["parent"]) for a in listed] == [("tuned", "tiny")]
    shown = json.loads(slipstream(based.home, "models", "show", "tiny", "--json").stdout)
    assert shown["adapters"] == ["tuned"]
    r = slipstream(based.home, "adapters", "merge", "tuned")
    assert r.returncode == 0 and "tuned-merged" in r.stdout, r.stderr
    bad = slipstream(based.home, "adapters", "import", str(tmp_path), "--base", "tiny")
    assert bad.returncode != 0 and "not a PEFT adapter" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

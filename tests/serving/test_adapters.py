"""LoRA adapters served over one base in one continuous batch: rows of different adapters (and of the base)
share each step, each applying its own adapter's update; greedy tokens equal each merged model's; at most
max_loras resident (least recently used evicted, pinned kept, a row waits for a slot without holding up the
others); adapters named by the request's model, listed in /v1/models with their parent, loaded and unloaded
at run time behind the key, a bad one refused without harm; per-adapter counts in /metrics."""

from __future__ import annotations

import concurrent.futures
import shutil

import httpx
import pytest

pytest.importorskip("peft")
torch = pytest.importorskip("torch")

from tests.models.test_adapters import train_lora  # noqa: E402
from tests.serving.running import RunningServer  # noqa: E402

ADAPTERS = {"a1": dict(seed=1, targets=("q_proj", "v_proj")), "a2": dict(seed=2, targets=("o_proj", "down_proj")),
            "a3": dict(seed=3, targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                       r=8, use_rslora=True)}
PROMPTS = [[5, 17, 33, 9], [40, 2, 2, 19, 60, 7], [11, 12], [8, 30, 30, 30, 1]]


@pytest.fixture(scope="module")
def lora_store(tmp_path_factory, tiny_llama_dir):
    """The tiny model with a chat template, three adapters trained on it, and each merged into it."""
    from slipstream.models.adapters import import_adapter, merge_adapter
    from slipstream.models.intake import import_model
    from slipstream.store import Store
    from tests.serving.conftest import CHAT_TEMPLATE

    src = tmp_path_factory.mktemp("lora-base") / "model"
    shutil.copytree(tiny_llama_dir, src)
    (src / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    store = Store(tmp_path_factory.mktemp("lora-home"))
    import_model(str(src), "tiny", store=store)
    for name, how in ADAPTERS.items():
        d = train_lora(src, tmp_path_factory.mktemp(name) / name, steps=12, text=name, **how)
        import_adapter(d, "tiny", name, store=store)
        merge_adapter(name, f"{name}-merged", store=store)
    wider = tmp_path_factory.mktemp("other")
    from tests.conftest import build_tiny_llama

    other = build_tiny_llama(wider / "m", hidden=128)
    import_model(str(other), "other", store=store)
    import_adapter(train_lora(other, wider / "lora", steps=1), "other", "foreign", store=store)
    return store


def _greedy(store, name, prompt, n=8):
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams

    engine = open_engine(name, engine="transformers", store=store, threads=1)
    return engine.generate([prompt], SamplingParams(max_tokens=n, ignore_eos=True))[0].token_ids


def _run(stepper, requests):
    """Feed (seq_id, prompt, adapter) rows to a stepper at once; step until all end; tokens per seq_id."""
    from slipstream.engines.protocol import SamplingParams

    out = {i: [] for i, _, _ in requests}
    for i, prompt, adapter in requests:
        stepper.add(i, prompt, SamplingParams(max_tokens=8, ignore_eos=True, adapter=adapter))
    for _ in range(200):
        for o in stepper.step():
            if o.token is not None:
                out[o.seq_id].append(o.token)
        if not stepper.active:
            return out
    raise AssertionError("the batch did not finish")


@pytest.mark.parametrize("segment_above", [0, 10_000], ids=["segmented", "stacked"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_rows_of_different_adapters_share_steps_and_match_the_merged_models(lora_store, fused, segment_above,
                                                                            monkeypatch):
    from slipstream.engines.loading import open_engine
    from slipstream.engines.torch import lora

    monkeypatch.setattr(lora, "SEGMENT_ABOVE", segment_above)  # both ways of applying a step's adapters
    want = {(tuple(p), a): _greedy(lora_store, f"{a}-merged" if a else "tiny", p)
            for p in PROMPTS[:2] for a in (None, "a1", "a2", "a3")}
    assert len({tuple(v) for v in want.values()}) > 4  # the adapters change what the model says
    engine = open_engine("tiny", engine="transformers", store=lora_store, threads=1)
    bank = engine.adapters(max_loras=2)  # three adapters, two slots: one row waits for a slot
    for name in ADAPTERS:
        bank.register(name, lora_store.get(name).path)
    stepper = engine.stepper(fused_prefill=fused)
    requests = [(i, p, a) for i, (p, a) in enumerate(want)]
    got = _run(stepper, requests)
    for i, p, a in requests:
        assert got[i] == want[(tuple(p), a)], (a, p)
    assert stepper.stats()["mixed_adapter_steps"] > 0
    assert bank.evictions >= 1 and len(bank.resident) <= 2 and not bank.users and not bank.waiting


def test_pinned_adapters_stay_and_unload_waits_for_no_one(lora_store):
    from slipstream.engines.loading import open_engine

    engine = open_engine("tiny", engine="transformers", store=lora_store, threads=1)
    bank = engine.adapters(max_loras=2)
    bank.register("a1", lora_store.get("a1").path, pinned=True)
    for name in ("a2", "a3"):
        bank.register(name, lora_store.get(name).path)
    stepper = engine.stepper()
    _run(stepper, [(0, PROMPTS[0], "a2"), (1, PROMPTS[1], "a3"), (2, PROMPTS[2], "a2")])
    assert "a1" in bank.resident  # never evicted for a2 and a3, which took turns in the other slot
    bank.register("a3", lora_store.get("a3").path, pinned=True)  # a1 and a3 pinned: as many as max_loras
    with pytest.raises(ValueError, match="2 adapters are pinned already"):
        bank.register("a2", lora_store.get("a2").path, pinned=True)
    bank.unregister("a1")
    assert "a1" not in bank.resident and "a1" not in bank.paths


def test_served_adapters_through_the_openai_client(lora_store):
    from slipstream.engines.loading import open_engine
    from slipstream.serving.adapters import AdapterCatalog
    from slipstream.serving.settings import DeploymentSettings

    engine = open_engine("tiny", engine="transformers", store=lora_store, threads=1)
    settings = DeploymentSettings(api_keys=["k"], max_loras=2, adapters=["a1", {"name": "a2", "pinned": True}],
                                  defaults={"temperature": 0, "max_tokens": 6}, exact_cache={"enabled": True})
    want = {a: _greedy(lora_store, f"{a}-merged" if a else "tiny", PROMPTS[3], 6) for a in (None, "a1", "a2", "a3")}
    with RunningServer(engine, settings, "tiny", adapters=AdapterCatalog(lora_store, "tiny")) as srv:
        client = srv.client("k")
        models = {m.id: m for m in client.models.list().data}
        assert set(models) == {"tiny", "a1", "a2"} and models["a1"].parent == "tiny"

        def ask(model):
            r = client.completions.create(model=model, prompt=PROMPTS[3], max_tokens=6, temperature=0)
            return r.model, r.choices[0].text

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(ask, ["tiny", "a1", "tiny:a2", "a1", "a2", "tiny"]))
        tok = engine.tokenizer
        texts = {a: tok.decode(t) for a, t in want.items()}
        assert answers == [("tiny", texts[None]), ("a1", texts["a1"]), ("tiny:a2", texts["a2"]),
                           ("a1", texts["a1"]), ("a2", texts["a2"]), ("tiny", texts[None])]
        # the base's cached answer is never an adapter's (the cache key holds the adapter)
        assert ask("a1") == ("a1", texts["a1"])

        key = {"Authorization": "Bearer k"}
        assert httpx.post(srv.url + "/v1/adapters", json={"name": "a3"}).status_code == 401
        r = httpx.post(srv.url + "/v1/adapters", json={"name": "a3"}, headers=key)
        assert r.status_code == 200 and [a["name"] for a in r.json()["data"]] == ["a1", "a2", "a3"]
        assert ask("a3") == ("a3", texts["a3"])
        for bad, named in (("foreign", "trained on 'other'"), ("nope", "no adapter 'nope'"),
                           ("a1-merged", "not an adapter")):
            r = httpx.post(srv.url + "/v1/adapters", json={"name": bad}, headers=key)
            assert r.status_code == 400 and named in r.json()["error"]["message"], r.json()
        assert ask("tiny") == ("tiny", texts[None])  # still serving
        assert httpx.delete(srv.url + "/v1/adapters/a3", headers=key).status_code == 200
        with pytest.raises(Exception, match="does not exist"):
            ask("a3")
        r = client.chat.completions.create(model="a2", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        assert r.model == "a2" and r.usage.completion_tokens >= 1
        r = httpx.post(srv.url + "/v1/completions", headers=key,
                       json={"model": "a1", "prompt": "x", "max_tokens": 2, "logprobs": 1})
        assert r.status_code == 400 and "adapter" in r.json()["error"]["message"]
        m = srv.metrics(key)
        assert m['slipstream_adapter_requests_total{adapter="a1"}'] >= 2
        assert m['slipstream_adapter_output_tokens_total{adapter="a2"}'] >= 6


def test_a_deployment_spec_lists_adapters_checked_against_the_store(lora_store):
    from slipstream.deploy.plan import plan_spec
    from slipstream.deploy.spec import DeploySpec
    from slipstream.errors import InvalidConfig

    spec = DeploySpec.parse({"models": [{"name": "chat", "variant": "tiny", "adapters": ["a1", "a2"],
                                         "max_loras": 2}]})
    [p] = plan_spec(spec, lora_store)
    assert [a["name"] for a in p.settings["adapters"]] == ["a1", "a2"] and p.settings["max_loras"] == 2
    for models, named in (
        ([{"name": "chat", "variant": "tiny", "adapters": ["foreign"]}], "trained on 'other'"),
        ([{"name": "chat", "variant": "tiny", "adapters": ["a1"]}, {"name": "a1", "variant": "tiny"}],
         "that name is taken"),
        ([{"name": "chat", "variant": "tiny", "adapters": [{"name": "a1", "pinnned": True}]}], "pinnned"),
    ):
        with pytest.raises(InvalidConfig, match=named):
            plan_spec(DeploySpec.parse({"models": models}), lora_store)


def test_an_adapter_over_a_quantized_base_against_it_over_the_float_base(lora_store):
    """Issue 28's second way: the adapter kept apart (float deltas) over a variant of its base."""
    from slipstream.evaluation.adapters import adapter_on_variant
    from slipstream.pipeline import optimize

    if not lora_store.exists("tiny-bf16"):
        optimize("tiny", "cast", {"dtype": "bfloat16"}, name="tiny-bf16", store=lora_store)
    same = adapter_on_variant("a3", "tiny", store=lora_store, max_tokens=600, window=128, stride=64)
    assert same["on_variant"]["kl_mean"] < 1e-9 and same["on_variant"]["top1_agreement"] == 1.0
    assert same["on_variant"]["perplexity"] == pytest.approx(same["on_base"]["perplexity"], rel=1e-9)
    r = adapter_on_variant("a3", "tiny-bf16", store=lora_store, max_tokens=600, window=128, stride=64)
    v = r["on_variant"]
    assert r["base"] == "tiny" and r["tokens"] == 600
    assert 0 < v["kl_mean"] < 0.01 and v["top1_agreement"] > 0.9  # bfloat16 moves it a little, not more
    assert v["perplexity_ratio"] == pytest.approx(1, abs=0.05)
    [stored] = lora_store.results("tiny-bf16", kind="adapter-eval")
    assert stored.metrics["perplexity"] == v["perplexity"] and stored.settings["adapter"] == "a3"
    from slipstream.errors import InvalidConfig

    with pytest.raises(InvalidConfig, match="trained on 'other'"):
        adapter_on_variant("foreign", "tiny-bf16", store=lora_store)

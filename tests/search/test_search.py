"""The search end to end on the tiny Llama: local workers, resume after a kill, nothing passing, Ray."""

import json

import pytest

from slipstream.evaluation.gate import Gate
from slipstream.search.executors import LocalExecutor
from slipstream.search.record import Status
from slipstream.search.run import SearchSettings, search

pytest.importorskip("ctranslate2")

# int8 weights with float32 elsewhere: a small measured loss, and it runs on every CPU (int16 does not:
# CTranslate2's oneDNN backend, its default on AMD, has no int16 kernel)
SMALL_LOSS = "int8_float32"

RECIPES = {"replace": True, "candidates": [
    {"steps": [{"technique": "ctranslate2", "quantization": "float32"}],
     "prior": {"speedup": 1.2, "size_ratio": 1.0, "pass_probability": 0.99, "minutes": 1}},
    {"steps": [{"technique": "ctranslate2", "quantization": "int8"}],
     "prior": {"speedup": 4, "size_ratio": 0.26, "pass_probability": 0.5, "minutes": 1}},
    {"steps": [{"technique": "ctranslate2", "quantization": SMALL_LOSS}],
     "prior": {"speedup": 2, "size_ratio": 0.5, "pass_probability": 0.9, "minutes": 1}},
]}


class CountingExecutor(LocalExecutor):
    def __init__(self, workers=1):
        super().__init__(workers)
        self.started = []

    def _one(self, request, on_event, deadline=None):
        self.started.append(request["candidate"]["label"])
        return super()._one(request, on_event, deadline)


def settings(tmp_path, gate="perplexity=5%", recipes=RECIPES, **kw):
    path = tmp_path / "recipes.json"
    path.write_text(json.dumps(recipes))
    return SearchSettings(**{"model": "tiny", "gate": Gate.parse(gate), "objective": "size", "budget_s": None,
                             "eval_tokens": 1024, "screen_tokens": 256, "window": 128, "stride": 64,
                             "recipe_file": str(path), "replace_defaults": True,
                             "skip_margin": None} | kw)  # every screened candidate measured in full


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, tiny_llama_dir):
    from slipstream.models.intake import import_model
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("search-home"))
    import_model(str(tiny_llama_dir), "tiny", store=store)
    return store


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, tiny_store):
    tmp_path = tmp_path_factory.mktemp("search")
    events, executor = [], CountingExecutor()
    result = search(settings(tmp_path), store=tiny_store, executor=executor, listener=events.append,
                    report=tmp_path / "report.html")
    return tmp_path, result, events, executor


def test_search_picks_smallest_passing_and_keeps_every_candidate(local_run, tiny_store):
    tmp_path, result, events, executor = local_run
    assert len(result.records) == 3 and len(executor.started) == 6  # each probed, then measured in full
    assert {r.label for r in result.records} == {"ct2-float32", "ct2-int8", f"ct2-{SMALL_LOSS}"} or \
        len({r.label for r in result.records}) == 3
    for r in result.records:  # recipe, lineage, metrics, and a status for every candidate
        assert r.steps and r.status in (Status.PASSED, Status.FAILED_GATE, Status.SCREENED_OUT), r
        assert tiny_store.get(r.name).parent == "tiny"
    passing = [r for r in result.records if r.status is Status.PASSED]
    f32 = next(r for r in result.records if r.label == "ct2-float32")
    assert f32.status is Status.PASSED and abs(f32.drop) < 1e-3  # float32 conversion is exact
    assert result.best.size_bytes == min(r.size_bytes for r in passing)
    assert result.best.name in [r.name for r in result.frontier]
    # progress: candidate, stage, best so far
    assert any(e["event"] == "stage" and e["stage"] == "evaluate" for e in events)
    assert any(e["event"] == "finished" and e["best"] for e in events)
    html = (tmp_path / "report.html").read_text()
    assert "<h2>Search</h2>" in html and result.best.name in html

    # Resume: the same arguments again reuse every finished candidate and run nothing.
    again = CountingExecutor()
    second = search(settings(tmp_path), store=tiny_store, executor=again)
    assert again.started == [] and second.resumed == 3
    assert second.best.name == result.best.name

    # A kill mid-search: the ledger lost its last candidate (and holds half a line); only that one reruns.
    ledger = tiny_store.home / "searches" / result.search_id / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    ledger.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])
    third_exec = CountingExecutor()
    third = search(settings(tmp_path), store=tiny_store, executor=third_exec)
    assert third.resumed == 2 and third_exec.started == [third_exec.started[0]] * 2  # probed and measured
    assert third.best.name == result.best.name


def test_nothing_passes_names_the_closest(tmp_path, tiny_store):
    # int8 weights allowing no divergence from the original at all: it misses, and by how much is reported.
    # (KL, not perplexity: on a random model int8 noise can lower perplexity as well as raise it.)
    lossy_only = {"replace": True, "candidates": RECIPES["candidates"][2:3]}
    result = search(settings(tmp_path, gate="kl_mean=0abs", recipes=lossy_only), store=tiny_store,
                    executor=LocalExecutor())
    assert result.best is None
    (miss,) = result.closest
    assert miss.drop > 0 and miss.status in (Status.FAILED_GATE, Status.SCREENED_OUT)
    assert miss.reason and f"closest: {miss.shown_name} ({miss.reason})" in result.summary()


def test_a_relative_gate_on_kl_is_refused():
    from slipstream.errors import InvalidConfig

    with pytest.raises(InvalidConfig, match="kl_mean=0.01abs"):
        Gate.parse("kl_mean=5%")


def test_ray_spreads_candidates_with_the_same_result(local_run, tmp_path, tiny_store, monkeypatch):
    ray = pytest.importorskip("ray")
    from slipstream.search.executors import RayExecutor

    local = local_run[1]
    monkeypatch.setenv("SLIPSTREAM_HOME", str(tiny_store.home))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # A fresh search id (different screening slice) so nothing is resumed from the local run.
        ray_settings = settings(tmp_path)
        ray_settings = SearchSettings(**{**ray_settings.__dict__, "screen_tokens": 255})
        result = search(ray_settings, store=tiny_store, executor=RayExecutor(workers=2))
    finally:
        ray.shutdown()
    assert result.resumed == 0 and len(result.records) == 3
    assert len({r.worker.pid for r in result.records}) == 2  # two workers took candidates
    assert result.best.name == local.best.name
    assert {r.label: r.status for r in result.records} == {r.label: r.status for r in local.records}


def test_every_candidate_is_probed_then_measured_in_full_fastest_probe_first(tmp_path, tiny_store):
    # Successive halving in two rungs: both candidates built, screened and speed-probed; then the full
    # measurement in the order of their probe ratios, the rest of the rung cut by the probe bound.
    recipes = {"replace": True, "candidates": RECIPES["candidates"][:1] + RECIPES["candidates"][2:3]}
    executor, events = CountingExecutor(), []
    s = settings(tmp_path, recipes=recipes, confirm=0, objective="latency", bench_threads=1, output_tokens=8,
                 repeats=1, probe_tokens=4, skip_margin=1.25)
    result = search(s, store=tiny_store, executor=executor, listener=events.append)
    probed = {e["record"].label: e["record"] for e in events if e["event"] == "probed"}
    assert set(probed) == {"ct2-float32", f"ct2-{SMALL_LOSS}"}
    assert all(r.probe > 0 and r.probe_ratio > 0 and r.threads == 1 for r in probed.values())
    full = [e["label"] for e in events if e["event"] == "start" and e["rung"] == "full"]
    assert full and full == sorted(full, key=lambda label: -probed[label].probe_ratio)
    assert len(executor.started) == 2 + len(full)
    for n in result.not_run:  # cut by the bound: its probe, even 1.25 times over, below the best's measured ratio
        assert "speed probe gave" in n.reason
        assert probed[n.label].probe_ratio * 1.25 < result.best.objective_ratio

    everything = CountingExecutor()
    s = SearchSettings(**{**s.__dict__, "skip_margin": None, "screen_tokens": 255})
    search(s, store=tiny_store, executor=everything)
    assert sorted(everything.started) == sorted(["ct2-float32", f"ct2-{SMALL_LOSS}"] * 2)


class RequestLog(LocalExecutor):
    def __init__(self):
        super().__init__(1)
        self.requests = []

    def _one(self, request, on_event, deadline=None):
        self.requests.append(request)
        return super()._one(request, on_event, deadline)


def test_a_slow_recipe_is_probed_as_its_stand_in_and_built_only_when_it_could_win(tmp_path, tiny_store):
    # int8-rows changes weight values only: its stand-in is the same CTranslate2 conversion without it, probed
    # with no screen. By size, the float32 stand-in cannot beat the int8 variant measured first: the recipe is
    # cut without being built. By latency with no bound, it is built in full, as large as its stand-in.
    calibrated = [{"technique": "int8-rows", "samples": 8, "sequence_length": 64}]
    slow = lambda q: {"steps": calibrated + [{"technique": "ctranslate2", "quantization": q}],  # noqa: E731
                      "prior": {"speedup": 2, "size_ratio": 0.5, "pass_probability": 0.9, "minutes": 20}}
    recipes = {"replace": True, "candidates": [RECIPES["candidates"][2], slow("float32")]}
    log, events = RequestLog(), []
    result = search(settings(tmp_path, recipes=recipes, confirm=0, skip_margin=1.25), store=tiny_store,
                    executor=log, listener=events.append)
    probe = next(r for r in log.requests if r["candidate"]["label"] == "gptq-rows + ct2-float32")
    assert probe["fidelity"] == "probe" and probe["screen"] is None
    assert probe["candidate"]["stand_in"] == "ct2-float32"
    assert [st["technique"] for st in probe["candidate"]["steps"]] == ["ctranslate2"]
    probed = next(e["record"] for e in events if e["event"] == "probed" and e["record"].label.startswith("gptq-rows"))
    assert probed.probed_as == "ct2-float32" and probed.name == "tiny-ct2-float32" and probed.screen is None
    assert [r["candidate"]["label"] for r in log.requests].count("gptq-rows + ct2-float32") == 1  # never built
    assert not tiny_store.exists("tiny-gptq-rows-ct2-float32")
    (cut,) = [n for n in result.not_run if n.label == "gptq-rows + ct2-float32"]
    assert "stand-in ct2-float32" in cut.reason and "larger" in cut.reason

    recipes = {"replace": True, "candidates": [slow(SMALL_LOSS)]}
    log = RequestLog()
    (tmp_path / "latency").mkdir()
    result = search(settings(tmp_path / "latency", recipes=recipes, confirm=0, objective="latency",
                             bench_threads=1, output_tokens=8, repeats=1, probe_tokens=4),
                    store=tiny_store, executor=log)
    probe, full = log.requests
    assert probe["candidate"]["steps"] == [{"technique": "ctranslate2", "quantization": SMALL_LOSS}]
    assert [st["technique"] for st in full["candidate"]["steps"]] == ["int8-rows", "ctranslate2"] and full["screen"]
    (record,) = result.records
    assert record.name == f"tiny-gptq-rows-ct2-{SMALL_LOSS}" and record.evaluation is not None
    assert record.size_bytes == tiny_store.get(f"tiny-ct2-{SMALL_LOSS}").size_bytes  # same format, same size


def test_stand_ins_keep_the_format_and_drop_what_only_chooses_values():
    from slipstream.search.space import STAND_IN_MINUTES, Candidate
    from slipstream.search.recipes import Prior
    from slipstream.techniques.registry import make_config

    def twin(*steps):
        c = Candidate(tuple(make_config(t, o) for t, o in steps), Prior(5, 0.2, 0.5, 30))
        t = c.stand_in()
        return t and (t.label, t.prior.minutes, t.prior.speedup)

    assert twin(("prune-structured", {"layers": 0.2, "mlp": 0.25}), ("distill", {"steps": 60}),
                ("ctranslate2", {"quantization": "int8"})) == ("prune-l20-m25 + ct2-int8", STAND_IN_MINUTES, 5)
    assert twin(("gptq", {"bits": 4, "group_size": 128}))[0] == "rtn-w4g128"
    assert twin(("awq", {"bits": 4, "group_size": 64}))[0] == "rtn-w4g64"
    assert twin(("gptq", {"actorder": "weight"})) is None  # its column order is stored: no twin
    assert twin(("smoothquant", {"alpha": "auto", "lm_head": True}), ("int8-rows", {}),
                ("ctranslate2", {"quantization": "int8"}))[0] == "sq0.5-head + ct2-int8"
    assert twin(("w8a8", {"keep_float": []}))[0] == "w8a8-sq0.8-rtn-keep-none"
    assert twin(("ctranslate2", {"quantization": "int8"})) is None  # nothing cheaper than itself
    assert twin(("smoothquant", {"alpha": 0.7}), ("ctranslate2", {"quantization": "int8"})) is None


def test_the_probe_bound():
    from slipstream.search.record import SearchRecord
    from slipstream.search.run import _outpaced

    def rec(label, **kw):
        return SearchRecord(id=label, label=label, steps=[], status=Status.PASSED, **kw)

    best = rec("best", objective=40.0, objective_ratio=2.0)
    s = SearchSettings(model="m", objective="latency")
    assert _outpaced(rec("slow", probe_ratio=1.5), best, s).startswith("cannot beat best (2.00x measured)")
    assert _outpaced(rec("close", probe_ratio=1.7), best, s) is None  # 1.7 x 1.25 > 2: might still win
    assert "probe (on its stand-in twin, the same format) gave 1.50x" in _outpaced(
        rec("slow", probe_ratio=1.5, probed_as="twin"), best, s)
    assert _outpaced(rec("slow", probe_ratio=1.5), None, s) is None  # nothing passed yet
    assert _outpaced(rec("slow", probe_ratio=1.5), best, SearchSettings(model="m", skip_margin=None)) is None
    size = SearchSettings(model="m", objective="size")
    small = rec("small", objective=-100e6)
    assert "larger" in _outpaced(rec("big", probe=-200e6, probe_ratio=1.0), small, size)
    assert _outpaced(rec("smaller", probe=-50e6, probe_ratio=4.0), small, size) is None


def test_skip_margin_below_one_is_refused():
    from slipstream.errors import InvalidConfig

    with pytest.raises(InvalidConfig, match="skip margin"):
        SearchSettings(model="tiny", skip_margin=0.5)


def test_kl_bound_must_hold_beside_perplexity(tmp_path, tiny_store):
    # A gate perplexity cannot miss (100%) beside a KL bound int8 weights cannot meet (0): the candidate fails
    # on KL alone, with its value recorded and shown; with the bound off it passes.
    lossy_only = {"replace": True, "candidates": RECIPES["candidates"][2:3]}
    (tmp_path / "strict").mkdir()
    strict = settings(tmp_path / "strict", gate="perplexity=100%", recipes=lossy_only, max_kl=0.0)
    assert [g.metric for g in strict.gates] == ["perplexity", "kl_mean"]
    result = search(strict, store=tiny_store, executor=LocalExecutor(), report=tmp_path / "strict.html")
    (r,) = result.records
    assert result.best is None and r.status in (Status.FAILED_GATE, Status.SCREENED_OUT)
    assert r.drop < 1.0  # perplexity held
    measured = r.evaluation or r.screen
    (kl,) = measured.guards
    assert kl["metric"] == "kl_mean" and kl["value"] > 0 and kl["max_drop"] == 0.0 and not kl["relative"]
    assert "kl_mean" in r.reason and "perplexity" not in r.reason
    html = (tmp_path / "strict.html").read_text()
    assert "kl_mean ≤ 0" in html and f"{kl['value']:.4g}" in html

    (tmp_path / "off").mkdir()
    off = settings(tmp_path / "off", gate="perplexity=100%", recipes=lossy_only, max_kl=None)
    assert off.guards == ()
    result = search(off, store=tiny_store, executor=LocalExecutor())
    assert result.best is not None and result.best.status is Status.PASSED


def test_threads_are_a_dimension_and_the_pick_is_recommended_for_serving(tmp_path, tiny_store):
    # Each candidate is benchmarked at one thread and at two; the faster is kept, and the pick's engine, threads
    # and batching go into the store, where `slipstream serve` and a deployment find them.
    from slipstream.cli.serve import _recommended
    from slipstream.serving.settings import DeploymentSettings

    one = {"replace": True, "candidates": RECIPES["candidates"][:1]}
    s = settings(tmp_path, recipes=one, objective="latency", bench_threads="1,2", output_tokens=8, repeats=1,
                 confirm=0)
    assert s.bench_threads == (1, 2) and SearchSettings(model="m").bench_threads[0] == 1
    result = search(s, store=tiny_store, executor=LocalExecutor())
    assert result.reference.threads in (1, 2)
    (r,) = result.records
    assert r.status is Status.PASSED and set(r.by_threads) == {"1", "2"}
    assert r.by_threads[str(r.threads)] == max(r.by_threads.values()) == r.objective
    assert r.bench.engine["threads"] == r.threads
    rec = tiny_store.recommendation(r.name)
    assert result.recommended == {"engine": "ctranslate2", "threads": r.threads, "batching": "dynamic"}
    assert {k: rec[k] for k in ("engine", "threads", "batching")} == result.recommended
    assert rec["source"]["search"] == result.search_id

    variant = tiny_store.get(r.name)
    chosen, engine, options = _recommended(tiny_store, variant, DeploymentSettings.load(None, {}), None, None, set())
    assert (engine, chosen.threads, chosen.batching, options) == ("ctranslate2", r.threads, "dynamic", {})
    given = DeploymentSettings.load(None, {"threads": 7, "batching": "sequential"})
    kept, _, _ = _recommended(tiny_store, variant, given, None, None, {"threads", "batching"})
    assert (kept.threads, kept.batching) == (7, "sequential")  # the command line wins


def test_prompt_lookup_is_a_serving_option_measured_on_a_prompt_set(tmp_path, tiny_store):
    # On a prompt-set workload a candidate whose engine takes prompt_lookup is benchmarked with and without it;
    # the faster is kept in the record and recommended for serving, where `slipstream serve` applies it under
    # whatever the user gives. On the fixed workload nothing extra is tried and the search's identity is as before.
    from slipstream.cli.serve import _recommended
    from slipstream.serving.settings import DeploymentSettings

    assert SearchSettings(model="m").option_sets() == [{}]
    assert "option_sets" not in SearchSettings(model="m").identity("sha")
    smoothed = {"replace": True, "candidates": [
        {"steps": [{"technique": "smoothquant", "samples": 2, "sequence_length": 32}],  # an HF variant: transformers
         "prior": {"speedup": 1.0, "size_ratio": 1.0, "pass_probability": 0.9, "minutes": 1}}]}
    s = settings(tmp_path, recipes=smoothed, objective="latency", bench_threads="1", output_tokens=8, repeats=1,
                 confirm=0, workload="grounded", prompt_lookup=4)
    assert s.option_sets() == [{}, {"prompt_lookup": 4}] and s.bench_settings()["workload"] == "grounded"
    result = search(s, store=tiny_store, executor=LocalExecutor())
    (r,) = result.records
    assert r.status is Status.PASSED and set(r.by_options) == {"plain", "prompt_lookup=4"}
    faster = max(r.by_options, key=r.by_options.get)
    assert r.objective == r.by_options[faster]
    assert r.engine_options == (None if faster == "plain" else {"prompt_lookup": 4})
    rec = tiny_store.recommendation(r.name)
    assert rec["engine"] == "transformers" and rec.get("engine_options") == r.engine_options
    assert rec["source"]["workload"] == "grounded" and rec["source"]["by_options"] == r.by_options

    # whichever won here, a recommended option reaches the server's engine, under the user's own
    variant = tiny_store.get(r.name)
    tiny_store.recommend(r.name, {"engine": "transformers", "threads": 1, "batching": "continuous",
                                  "engine_options": {"prompt_lookup": 4}}, {"search": "s1"})
    _, engine, options = _recommended(tiny_store, variant, DeploymentSettings.load(None, {}), None, None, set())
    assert (engine, options) == ("transformers", {"transformers": {"prompt_lookup": 4}})
    _, _, elsewhere = _recommended(tiny_store, variant, DeploymentSettings.load(None, {}), "vllm", None, {"engine"})
    assert elsewhere == {}  # another engine than the one measured takes none of them


def test_a_probe_starts_only_when_its_scaled_prior_fits_before_the_full_rung():
    # a recipe's build time is its prior scaled by how the probes so far compared with theirs (the median),
    # and a probe starts only if all of it fits in what is left after the full rung's reserve
    import time
    from types import SimpleNamespace

    from slipstream.search.run import _no_time, _probe_estimate

    heavy = SimpleNamespace(prior=SimpleNamespace(minutes=16.0))
    assert _probe_estimate(heavy, []) == 16 * 60 * 0.5
    assert _probe_estimate(heavy, [(180, 60), (120, 60), (600, 100)]) == pytest.approx(16 * 60 / 3)
    run = SimpleNamespace(deadline=time.time() + 600)
    assert _no_time(run, 500, reserve=200, share=1.0).startswith("budget: ")  # 400 s left, 500 needed
    assert _no_time(run, 300, reserve=200, share=1.0) is None
    assert _no_time(run, 700, reserve=200, share=0.5) is None  # the full rung starts one if half of it fits
    assert _no_time(SimpleNamespace(deadline=None), 1e9, reserve=0, share=1.0) is None  # no budget

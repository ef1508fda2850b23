"""Deployment specs: typed, unknown keys refused by name; GALE's deploy body mapped and range-checked."""

from __future__ import annotations

import json
import os

import pytest

from slipstream.deploy.gale import from_gale
from slipstream.deploy.plan import plan_spec
from slipstream.deploy.ray_app import app_name, deployment_options
from slipstream.deploy.spec import DeploySpec
from slipstream.errors import InvalidConfig

GALE = {
    "modelId": "tiny-ct2-int8",
    "deploymentName": "chat",
    "hyperParameters": {"temperature": 0.7, "maxTokens": 256, "topP": 0.9, "topK": 40, "stopSequence": "</s>"},
    "scalingParameters": {"maxBatchSize": 8, "minReplicas": 1, "maxReplicas": 3, "scaleUpDelay": 5,
                          "scaleDownDelay": 120},
    "optimizationInfo": {"optimizationType": "CTranslate2", "quantizationType": "int8"},
}


def test_spec_with_two_models_and_scaling():
    spec = DeploySpec.parse({"port": 9000, "models": [
        {"name": "a", "variant": "tiny", "defaults": {"temperature": 0.2},
         "scaling": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 3, "cpus_per_replica": 0.5}},
        {"name": "b", "variant": "tiny-ct2-int8", "max_batch_size": 4, "engine": {"compute_type": "int8"}}]})
    a, b = spec.models
    assert a.scaling.autoscaling and not b.scaling.autoscaling
    assert a.defaults.temperature == 0.2 and b.max_batch_size == 4
    opts = deployment_options(a.scaling, a.max_batch_size, 30.0)
    assert opts["autoscaling_config"]["max_replicas"] == 4
    assert opts["autoscaling_config"]["target_ongoing_requests"] == 3
    assert opts["ray_actor_options"] == {"num_cpus": 0.5}
    assert opts["max_ongoing_requests"] == a.max_batch_size  # a replica takes what it can batch
    # b leaves scaling out: the layout measured best, one single-threaded replica per core a's first
    # replica (half a CPU) leaves
    left = max(1, int((os.cpu_count() or 1) - 0.5))
    assert deployment_options(b.scaling, b.max_batch_size, 30.0)["num_replicas"] == left
    assert (b.scaling.cpus_per_replica, b.scaling.threads()) == (1, 1)
    assert a.serving_settings()["threads"] == 1  # half a CPU still gets one engine thread


@pytest.mark.parametrize("data, needle", [
    ({"models": [{"name": "a", "variant": "tiny", "replicas": 2}]}, "models.0.replicas"),
    ({"models": [{"name": "a", "variant": "tiny", "scaling": {"max_replica": 2}}]}, "models.0.scaling.max_replica"),
    ({"models": [{"name": "a", "variant": "tiny"}], "hostname": "x"}, "hostname"),
    ({"models": [{"name": "a", "variant": "tiny", "scaling": {"min_replicas": 3, "max_replicas": 2}}]},
     "min_replicas (3) is above max_replicas (2)"),
    ({"models": [{"name": "a", "variant": "tiny"}, {"name": "a", "variant": "tiny"}]}, "two models are named 'a'"),
    ({"models": []}, "models"),
    ({"models": [{"name": "a", "variant": "tiny", "engine": {"gemmm": "x"}}]}, "no engine takes option 'gemmm'"),
])
def test_spec_refuses_bad_keys_naming_them(data, needle):
    with pytest.raises(InvalidConfig, match="invalid deployment spec") as exc:
        DeploySpec.parse(data)
    assert needle in str(exc.value)


def test_gale_body_maps_onto_the_spec():
    spec = DeploySpec.parse(GALE)
    (m,) = spec.models
    assert (m.name, m.variant) == ("chat", "tiny-ct2-int8")
    assert m.defaults.temperature == 0.7 and m.defaults.top_p == 0.9 and m.defaults.top_k == 40
    assert m.defaults.max_tokens == m.limits.max_tokens == 256 and m.defaults.stop == ["</s>"]
    assert m.max_batch_size == 8
    s = m.scaling
    assert (s.min_replicas, s.max_replicas, s.upscale_delay_s, s.downscale_delay_s) == (1, 3, 5.0, 120.0)
    assert m.optimization.type == "CTranslate2" and m.optimization.quantization == "int8"


def test_gale_several_models_with_endpoint_keys():
    body = {"port": 8100, "apiKeys": ["k"], "models": [GALE, {**GALE, "deploymentName": "other"}]}
    spec = DeploySpec.parse(body)
    assert spec.port == 8100 and spec.api_keys == ["k"] and [m.name for m in spec.models] == ["chat", "other"]


@pytest.mark.parametrize("section, field, value", [
    ("hyperParameters", "temperature", 2.5), ("hyperParameters", "topP", 1.5), ("hyperParameters", "topK", 0),
    ("hyperParameters", "topK", 101), ("hyperParameters", "maxTokens", 0),
    ("scalingParameters", "maxBatchSize", 257), ("scalingParameters", "minReplicas", 0),
    ("scalingParameters", "minReplicas", 11), ("scalingParameters", "maxReplicas", 51),
    ("scalingParameters", "scaleUpDelay", -1),
])
def test_gale_out_of_range_names_the_field(section, field, value):
    body = json.loads(json.dumps(GALE))
    body[section][field] = value
    with pytest.raises(InvalidConfig, match="invalid GALE deploy body") as exc:
        DeploySpec.parse(body)
    assert f"{section}.{field}" in str(exc.value)


@pytest.mark.parametrize("where", ["top", "hyperParameters", "scalingParameters"])
def test_gale_unknown_field_is_refused_by_name(where):
    body = json.loads(json.dumps(GALE))
    (body if where == "top" else body[where])["maxReplica"] = 2
    with pytest.raises(InvalidConfig, match="maxReplica"):
        DeploySpec.parse(body)


def test_gale_minreplicas_above_max_and_bad_type():
    body = json.loads(json.dumps(GALE))
    body["scalingParameters"].update(minReplicas=4, maxReplicas=2)
    with pytest.raises(InvalidConfig, match="minReplicas .4. is above maxReplicas .2."):
        DeploySpec.parse(body)
    body = json.loads(json.dumps(GALE))
    body["optimizationInfo"]["optimizationType"] = "TensorRT"
    with pytest.raises(InvalidConfig, match="optimizationInfo.optimizationType"):
        DeploySpec.parse(body)


def test_gale_top_p_zero_means_greedy():
    body = json.loads(json.dumps(GALE))
    body["hyperParameters"].update(topP=0)
    body["hyperParameters"].pop("topK")
    assert from_gale(body)["models"][0]["defaults"]["top_k"] == 1


def test_optimization_info_is_checked_against_the_variant(session_store):
    plans = plan_spec(DeploySpec.parse(GALE), session_store)
    assert plans[0].engine == "ctranslate2" and plans[0].variant == "tiny-ct2-int8"
    wrong_quant = json.loads(json.dumps(GALE))
    wrong_quant["optimizationInfo"]["quantizationType"] = "float16"
    with pytest.raises(InvalidConfig, match="quantizationType 'float16' does not match variant 'tiny-ct2-int8'"):
        plan_spec(DeploySpec.parse(wrong_quant), session_store)
    wrong_type = json.loads(json.dumps(GALE))
    wrong_type["optimizationInfo"] = {"optimizationType": "vLLM", "quantizationType": "awq"}
    with pytest.raises(InvalidConfig, match="optimizationType 'vLLM' does not match"):
        plan_spec(DeploySpec.parse(wrong_type), session_store)
    missing = {**GALE, "modelId": "no-such-variant"}
    with pytest.raises(InvalidConfig, match="no-such-variant"):
        plan_spec(DeploySpec.parse(missing), session_store)


def test_replica_version_changes_with_the_variant_not_the_scaling(session_store):
    base = {"models": [{"name": "a", "variant": "tiny-ct2-int8", "scaling": {"max_replicas": 1}}]}
    scaled = {"models": [{"name": "a", "variant": "tiny-ct2-int8", "scaling": {"max_replicas": 3}}]}
    other = {"models": [{"name": "a", "variant": "tiny-ct2-float32"}]}
    v = [plan_spec(DeploySpec.parse(d), session_store)[0].version() for d in (base, scaled, other)]
    assert v[0] == v[1] != v[2]


def test_app_names_are_distinct_and_safe():
    names = {app_name(n) for n in ("a", "A", "org/model:v1", "org-model-v1", "é")}
    assert len(names) == 5 and all(n.replace("-", "").replace("_", "").isalnum() for n in names)


def test_check_prints_the_resolved_spec(tmp_path, session_store, monkeypatch):
    from typer.testing import CliRunner

    from slipstream.cli.main import app

    path = tmp_path / "gale.json"
    path.write_text(json.dumps(GALE))
    monkeypatch.setenv("SLIPSTREAM_HOME", str(session_store.home))
    result = CliRunner().invoke(app, ["deploy", str(path), "--check"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["replicas"][0]["engine"] == "ctranslate2" and out["spec"]["models"][0]["name"] == "chat"


def test_a_spec_that_cannot_be_placed_is_refused_before_it_starts():
    from slipstream.deploy.ray_app import check_fits, cpus_needed

    spec = DeploySpec.parse({"models": [
        {"name": "a", "variant": "x", "scaling": {"cpus_per_replica": 2}},
        {"name": "b", "variant": "y", "scaling": {"min_replicas": 1, "max_replicas": 3, "cpus_per_replica": 1}}]})
    assert cpus_needed(spec) == (3.0, 5.0)
    check_fits(spec, 4.0)  # starts; the third replica of b would wait for room
    with pytest.raises(InvalidConfig, match="reserve 3 Ray CPUs but the cluster has 2"):
        check_fits(spec, 2.0)


def test_the_examples_in_docs_deploy_md_parse():
    import re
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    (spec_yaml,) = re.findall(r"```yaml\n(.*?)```", text, re.S)
    spec = DeploySpec.parse(yaml.safe_load(spec_yaml))
    assert [m.name for m in spec.models] == ["chat", "fast"] and spec.models[0].scaling.autoscaling
    (gale_json,) = re.findall(r"```json\n(.*?)```", text, re.S)
    assert DeploySpec.parse(json.loads(gale_json)).models[0].name == "chat"


def test_suggested_layout_shares_the_cores_among_models_without_scaling():
    from slipstream.deploy.spec import suggested_scaling

    assert suggested_scaling(8).min_replicas == suggested_scaling(8).max_replicas == 8
    assert suggested_scaling(8, models=3).min_replicas == 2
    assert suggested_scaling(1, models=4).min_replicas == 1
    spec = DeploySpec.parse({"models": [{"name": "a", "variant": "x"}, {"name": "b", "variant": "y"},
                                        {"name": "c", "variant": "z", "scaling": {"max_replicas": 5}}]})
    left = max(1, (os.cpu_count() or 1) - 1)  # c's first replica reserves one core
    assert [m.scaling.max_replicas for m in spec.models] == [max(1, left // 2)] * 2 + [5]


def test_a_search_recommendation_fills_what_the_spec_leaves_open(tmp_path, tiny_llama_dir, monkeypatch):
    from slipstream.models.intake import import_model
    from slipstream.store import Store

    store = Store(tmp_path / "home")
    import_model(str(tiny_llama_dir), "tiny", store=store)
    open_spec = {"models": [{"name": "a", "variant": "tiny"}]}
    assert plan_spec(DeploySpec.parse(open_spec), store)[0].settings["batching"] == "auto"
    store.recommend("tiny", {"engine": "transformers", "threads": 1, "batching": "dynamic"}, {"search": "s1"})
    (plan,) = plan_spec(DeploySpec.parse(open_spec), store)
    assert plan.engine == "transformers" and plan.settings["batching"] == "dynamic"
    assert plan.settings["threads"] == 1  # the scaling section's (one CPU per replica), not the search's
    chosen = {"models": [{"name": "a", "variant": "tiny", "batching": "continuous"}]}
    assert plan_spec(DeploySpec.parse(chosen), store)[0].settings["batching"] == "continuous"
    assert plan.options == {}
    # engine options a search measured faster (prompt lookup on its workload) go under the spec's own
    store.recommend("tiny", {"engine": "transformers", "threads": 1, "batching": "continuous",
                             "engine_options": {"prompt_lookup": 8}}, {"search": "s2"})
    assert plan_spec(DeploySpec.parse(open_spec), store)[0].options == {"prompt_lookup": 8}
    own = {"models": [{"name": "a", "variant": "tiny", "engine": {"prompt_lookup": 3}}]}
    assert plan_spec(DeploySpec.parse(own), store)[0].options == {"prompt_lookup": 3}
    # measured on a machine of another size: not used
    monkeypatch.setattr("slipstream.store.os.cpu_count", lambda: 999)
    assert store.recommendation("tiny") is None
    assert plan_spec(DeploySpec.parse(open_spec), store)[0].settings["batching"] == "auto"

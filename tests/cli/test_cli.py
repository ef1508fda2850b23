"""The CLI: fast help, one-line errors, JSON output that scripts can read."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def slipstream(*args: str, home=None, check=False) -> subprocess.CompletedProcess:
    env = os.environ | ({"SLIPSTREAM_HOME": str(home)} if home else {})
    proc = subprocess.run([sys.executable, "-m", "slipstream.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


def test_help_imports_no_heavy_library():
    code = ("import sys; sys.argv = ['slipstream', '--help']\n"
            "from slipstream.cli.main import app\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'ctranslate2', 'numpy', 'tokenizers') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout
    for command in ("models", "optimize", "evaluate", "bench", "compare", "demo"):
        assert command in out.stdout


@pytest.mark.parametrize("args,message", [
    (["models", "import", "./no/such/dir"], "no such file or directory"),
    (["models", "show", "ghost"], "no model or variant named 'ghost'"),
    (["optimize", "ghost", "-t", "ctranslate2"], "no model or variant named 'ghost'"),
    (["optimize", "ghost", "-t", "warp-drive"], "unknown technique 'warp-drive'; known: "),
    (["optimize", "ghost", "-t", "ctranslate2", "-o", "bits"], "--option expects key=value"),
    (["bench", "ghost", "--batch-sizes", "1,x"], "comma-separated integers"),
    (["optimize", "ghost", "-t", "smoothquant", "-q", "int8"], "technique 'smoothquant' has no quantization type"),
])
def test_errors_are_one_line(tmp_path, args, message):
    proc = slipstream(*args, home=tmp_path)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_import_optimize_list_show_as_json(tiny_llama_dir, tmp_path):
    pytest.importorskip("ctranslate2")
    imported = json.loads(slipstream("models", "import", str(tiny_llama_dir), "--name", "tiny", "--json",
                                     home=tmp_path, check=True).stdout)
    assert imported["name"] == "tiny" and imported["parameters"] > 0
    made = json.loads(slipstream("optimize", "tiny", "-t", "ctranslate2", "-q", "int8", "--json",
                                 home=tmp_path, check=True).stdout)
    assert made["name"] == "tiny-ct2-int8" and made["parent"] == "tiny"
    listed = json.loads(slipstream("models", "list", "--json", home=tmp_path, check=True).stdout)
    assert [r["name"] for r in listed] == ["tiny", "tiny-ct2-int8"]
    cast = json.loads(slipstream("optimize", "tiny", "-t", "cast", "-q", "bfloat16", "--json",  # -q is its dtype
                                 home=tmp_path, check=True).stdout)
    assert cast["name"] == "tiny-bf16"
    shown = json.loads(slipstream("models", "show", "tiny-ct2-int8", "--json", home=tmp_path, check=True).stdout)
    assert shown["manifest"]["technique"]["quantization"] == "int8"
    ev = json.loads(slipstream("evaluate", "tiny-ct2-int8", "--max-tokens", "512", "--window", "128",
                               "--stride", "64", "--threads", "1", "--json", home=tmp_path, check=True).stdout)
    report = ev["reports"][0]
    assert report["reference"] == "tiny" and report["metrics"]["kl_mean"] > 0 and ev["gates"] == []
    text = slipstream("evaluate", "tiny-ct2-int8", "--max-tokens", "512", "--window", "128", "--stride", "64",
                      home=tmp_path, check=True).stdout
    assert "(cached)" in text and "tiny-ct2-int8 vs tiny" in text
    gated = slipstream("evaluate", "tiny-ct2-int8", "--max-tokens", "512", "--window", "128", "--stride", "64",
                       "--gate", "perplexity", "--max-drop", "0%", home=tmp_path)
    worse = report["metrics"]["perplexity"] > report["reference_metrics"]["perplexity"]
    assert gated.returncode == (1 if worse else 0)
    assert ("FAIL  wikitext2.perplexity" in gated.stderr) == worse
    lenient = slipstream("evaluate", "tiny-ct2-int8", "--max-tokens", "512", "--window", "128", "--stride", "64",
                         "--gate", "perplexity=50%", "--json", home=tmp_path, check=True)
    assert json.loads(lenient.stdout)["passed"] is True
    unknown = slipstream("evaluate", "tiny", "--task", "mmlu", home=tmp_path)
    assert unknown.returncode == 1 and "unknown task 'mmlu'; known: wikitext2, arc_easy" in unknown.stderr
    techniques = json.loads(slipstream("techniques", "--json", check=True).stdout)
    assert {"ctranslate2", "smoothquant"} <= {t["name"] for t in techniques}


def test_techniques_markdown_is_one_row_per_technique():
    table = slipstream("techniques", "--markdown", check=True).stdout.splitlines()
    names = {t["name"] for t in json.loads(slipstream("techniques", "--json", check=True).stdout)}
    assert table[0].startswith("| technique | kind |") and len(table) == 2 + len(names)
    assert {row.split("|")[1].strip().strip("`") for row in table[2:]} == names


def test_unsupported_quantization_is_refused_before_any_work(tiny_llama_dir, tmp_path):
    ct2 = pytest.importorskip("ctranslate2")
    missing = [q for q in ("float16", "bfloat16", "int8_float16", "int8_bfloat16")
               if q not in ct2.get_supported_compute_types("cpu")]
    if not missing:
        pytest.skip("this CPU computes every CTranslate2 type")
    slipstream("models", "import", str(tiny_llama_dir), "--name", "tiny", home=tmp_path, check=True)
    proc = slipstream("optimize", "tiny", "-t", "ctranslate2", "-q", missing[0], "--device", "cpu", home=tmp_path)
    assert proc.returncode == 1 and f"'{missing[0]}' cannot run on cpu here" in proc.stderr
    assert json.loads(slipstream("models", "list", "--json", home=tmp_path).stdout)[-1]["name"] == "tiny"


def test_the_demo_runs_auto_with_its_own_settings_and_auto_defaults_for_the_rest(monkeypatch):
    # the demo calls `slipstream auto`'s function directly: every option it leaves alone must arrive as auto's
    # default value, never as typer's option object (a new auto option once broke `make demo` that way)
    import functools
    from pathlib import Path

    from typer.models import OptionInfo

    from slipstream.cli import auto, demo

    seen = {}
    monkeypatch.setattr(auto, "auto_cmd", functools.wraps(auto.auto_cmd)(lambda **kw: seen.update(kw)))
    demo.demo_cmd(budget="30m", max_drop="1%", max_kl="auto", objective="latency", report=Path("r.html"),
                  compare_only=False, eval_tokens=8192, rounds=1, as_json=True)
    assert seen["model"] == "smollm2-135m" and seen["budget"] == "30m" and seen["report"] == Path("r.html")
    assert seen["workload"] == "fixed" and seen["threads"] == "auto" and seen["run_all"] is False
    assert not [k for k, v in seen.items() if isinstance(v, OptionInfo)]

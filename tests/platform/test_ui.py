"""The web UI in a real browser (Chromium, headless, through Playwright) against the platform on a real server:
the key form, an import, an optimization watched to its end, a deployment of the new variant chatted with and
stopped; the models page with a thousand variants and names that are not HTML; stored figures; a search's
Pareto plot."""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timezone

import httpx
import pytest

from tests.platform.test_api import Platform, _client

CHROMIUM = shutil.which("chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra has it)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium); "
                                                         "playwright must not download its own")

SECOND = 1000  # Playwright counts milliseconds


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class Tab:
    """A page of its own browser context that records the page's script errors and accepts its confirms."""

    def __init__(self, browser, url: str, key: str | None = None):
        self.context = browser.new_context()
        if key is not None:  # as if the key form had been filled before
            self.context.add_init_script(f"localStorage.setItem('slipstream.apiKey', {json.dumps(key)})")
        self.page = self.context.new_page()
        self.page.set_default_timeout(30 * SECOND)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("dialog", lambda dialog: dialog.accept())
        self.url = url

    def open(self, route: str, ready: str, timeout_s: float = 30):
        self.page.goto(f"{self.url}/ui/{route}")
        self.ready(ready, timeout_s)

    def ready(self, page_name: str, timeout_s: float = 30):
        self.page.wait_for_selector(f"body[data-page='{page_name}']", timeout=timeout_s * SECOND)

    def close(self):
        self.context.close()


@pytest.fixture
def tab(browser):
    tabs = []

    def make(url: str, key: str | None = None) -> Tab:
        tabs.append(Tab(browser, url, key))
        return tabs[-1]

    yield make
    for t in tabs:
        t.close()
    assert not [e for t in tabs for e in t.errors], "the page raised"


def test_import_optimize_deploy_and_chat_in_the_browser(store, tiny_chat_dir, tab):
    pytest.importorskip("ctranslate2")
    p = Platform(store, api_keys=["k"], max_workers=1)
    try:
        t = tab(p.url)
        page = t.page
        page.goto(p.url + "/")  # redirected to /ui/; no key yet: the form asks for one
        page.wait_for_selector("#key-form:not([hidden])")
        page.fill("#key-input", "wrong")
        page.click("#key-submit")
        page.wait_for_selector("#key-form:not([hidden]) #key-note:has-text('refused')")
        page.fill("#key-input", "k")
        page.click("#key-submit")
        t.ready("models")
        assert page.is_visible("#models-empty")

        # import the tiny model from its directory; the table shows it once the job ends
        page.fill("#import-source", str(tiny_chat_dir))
        page.fill("#import-name", "tiny")
        page.click("#import-submit")
        page.wait_for_selector("#models tr[data-name='tiny']", timeout=120 * SECOND)
        assert "Added tiny" in page.text_content("#import-status")
        # the same model's files uploaded (multipart) under another name
        page.set_input_files("#upload-files", sorted(str(f) for f in tiny_chat_dir.iterdir() if f.is_file()))
        page.fill("#upload-name", "tiny-up")
        page.click("#upload-submit")
        page.wait_for_selector("#models tr[data-name='tiny-up']", timeout=120 * SECOND)

        # its page's optimize button opens the jobs form for it; GALE's pair CTranslate2 / int8
        page.click("#models a:text-is('tiny')")
        t.ready("model")
        page.click("#action-optimize")
        t.ready("jobs")
        assert page.input_value("#job-kind") == "optimize" and page.input_value("#job-model") == "tiny"
        page.select_option("#job-how", "gale")
        page.select_option("#job-opt-type", "CTranslate2")
        page.select_option("#job-quant", "int8")
        page.fill("#job-name", "tiny-ct2")
        page.click("#job-submit")
        t.ready("job")
        page.wait_for_selector("#job-state[data-state='succeeded']", timeout=180 * SECOND)
        assert page.get_attribute("#job-progress", "aria-valuenow") == "100"
        assert page.text_content("#job-variant") == "tiny-ct2"
        # the events as they came: each state, and the stages the progress bar went through
        page.wait_for_selector("#job-events li[data-type='state']:has-text('succeeded')", timeout=10 * SECOND)
        assert page.locator("#job-events li[data-type='state']:has-text('running')").count() == 1
        assert page.locator("#job-events li[data-type='progress']").count() >= 1

        # deploy it (process runtime): the form is prefilled with the variant
        page.click("a[href='#/deploy?variant=tiny-ct2']")
        t.ready("deploy")
        assert page.input_value("#deploy-variant") == "tiny-ct2"
        page.fill("#deploy-name", "chat")
        page.fill("#deploy-temperature", "0")
        page.fill("#deploy-max-tokens", "8")
        page.select_option("#deploy-runtime", "process")
        shown = json.loads(page.text_content("#deploy-spec"))
        assert shown["models"] == [{"name": "chat", "variant": "tiny-ct2",
                                    "defaults": {"temperature": 0, "max_tokens": 8}}]
        page.click("#deploy-submit")
        t.ready("deployment")
        page.wait_for_selector("#deployment-state[data-state='ready'], #deployment-state[data-state='failed']",
                               timeout=180 * SECOND)
        assert page.get_attribute("#deployment-state", "data-state") == "ready", \
            page.text_content("#deployment-error")
        assert page.text_content("#deployment-url").startswith("http://127.0.0.1:")

        # a chat through the platform's proxy route
        page.fill("#chat-input", "Hello there")
        page.click("#chat-send")
        answer = page.wait_for_selector(".msg[data-role='assistant'] .text", timeout=60 * SECOND)
        assert answer.text_content().strip(), page.text_content("#chat-status")
        assert page.text_content(".msg[data-role='user'] .text") == "Hello there"
        # the figures (polled every 2 s) count it
        page.wait_for_function("Number(document.querySelector('[data-figure=requests]').textContent) >= 1",
                               timeout=20 * SECOND)

        page.click("#deployment-stop")
        page.wait_for_selector("#deployment-state[data-state='stopped']", timeout=60 * SECOND)
    finally:
        _stop_deployments(p)
        p.close()


def _stop_deployments(p: Platform) -> None:
    """Whatever deployment the test left running, stopped (a failed assertion must not leave a server)."""
    def running(c: httpx.Client) -> list[dict]:
        return [d for d in c.get("/api/v1/deployments").json()["data"] if d["state"] not in ("stopped", "failed")]

    with _client(p) as c:
        try:
            for d in running(c):
                if d["state"] != "stopping":
                    c.delete(f"/api/v1/deployments/{d['id']}")
            end = time.monotonic() + 60
            while running(c) and time.monotonic() < end:
                time.sleep(0.3)
        except httpx.HTTPError:
            pass  # the platform is gone: the test has failed already and says why


ODD = '<img src=x onerror="window.owned=1">&"quoted"'


def _variant(name: str, parent: str | None, technique: dict | None = None, **extra):
    from slipstream.store.registry import VariantRow

    return VariantRow(name=name, kind="variant" if parent else "model", format="ctranslate2" if parent else "hf",
                      architecture="LlamaForCausalLM", parameters=135_000_000, size_bytes=140_000_000,
                      sha256="0" * 64, source="test", parent=parent, technique=technique, device="cpu",
                      path=f"variants/{len(name)}", created=datetime.now(timezone.utc).isoformat(), **extra)


def test_models_page_with_a_thousand_variants_and_a_model_with_figures(store, tab):
    registry = store.registry
    registry.add_variant(_variant("base", None))
    for i in range(999):
        registry.add_variant(_variant(f"base-v{i:03}", "base", {"technique": "ctranslate2", "quantization": "int8"}))
    registry.add_variant(_variant(ODD, "base"))
    store.add_result("base-v001", "evaluation", "k1", {"task": "wikitext2", "max_tokens": 8192, "reference": "base"},
                     {"perplexity": 12.3456, "reference_perplexity": 12.0, "drop": 0.0288}, {"cpu": "test"}, {})
    store.add_result("base-v001", "bench", "k2", {"threads": 1, "batch_sizes": [1, 4]},
                     {"latency": {"ttft_s": {"p50": 0.0123}},
                      "throughput": [{"batch_size": 1, "output_tokens_per_s": {"median": 123.4}}]}, {"cpu": "test"}, {})
    p = Platform(store, api_keys=["k"])
    try:
        t = tab(p.url, key="k")
        page = t.page
        start = time.monotonic()
        t.open("#/models", "models")
        seconds = time.monotonic() - start
        assert page.locator("#models tbody tr").count() == 1001
        assert seconds < 10, f"the models page took {seconds:.1f} s for 1,001 models"
        # a name is text, never markup
        assert page.locator("#models img").count() == 0 and page.evaluate("window.owned") is None
        assert page.locator(f"#models tr td a:text-is({json.dumps(ODD)})").count() == 1
        page.fill("#model-filter", "v00")
        assert page.locator("#models tbody tr:visible").count() == 10

        page.click("#models a:text-is('base-v001')")
        t.ready("model")
        assert page.text_content("#model-name") == "base-v001"
        assert "base" in page.text_content("#model-lineage")
        evaluation = page.locator("table.figures[data-kind='evaluation']")
        assert "perplexity" in evaluation.text_content() and "12.35" in evaluation.text_content()
        bench = page.locator("table.figures[data-kind='bench']")
        assert "throughput[0].output_tokens_per_s.median" in bench.text_content()
        assert "123.4" in bench.text_content() and "0.0123" in bench.text_content()

        # the odd name's own page, reached through its escaped link
        t.open("#/models", "models")
        page.click(f"#models a:text-is({json.dumps(ODD)})")
        t.ready("model")
        assert page.text_content("#model-name") == ODD
    finally:
        p.close()


def _record(i: int, status: str, drop: float, ratio: float) -> dict:
    return {"id": f"c{i}", "label": f"recipe {i}", "steps": [], "status": status, "name": f"tiny-c{i}",
            "size_bytes": 1_000_000 * (i + 1), "drop": drop, "objective": ratio, "objective_ratio": ratio,
            "max_drop": 0.01}


def test_a_search_job_page_draws_its_pareto_plot(store, tab):
    records = [_record(0, "passed", 0.002, 1.4), _record(1, "passed", 0.008, 2.1), _record(2, "failed_gate", 0.03, 2.6),
               _record(3, "passed", 0.006, 1.2), _record(4, "error", None, None)]
    result = {"search_id": "s1", "settings": {"gate": {"metric": "perplexity", "max_drop": 0.01, "relative": True},
                                               "objective": "latency"},
              "reference": {"name": "tiny", "metric": "perplexity", "value": 12.0, "size_bytes": 5_000_000,
                            "objective": -0.1},
              "records": records, "best": records[1], "frontier": [records[0], records[1]], "closest": []}
    registry = store.registry
    job = registry.add_job("search", {"model": "tiny", "metric": "perplexity", "max_drop": "1%",
                                      "objective": "latency", "budget": "30m"})
    registry.update_job(job.id, state="succeeded", result=result, progress={"stage": "done", "done": 5, "total": 5,
                                                                             "fraction": 1.0})
    p = Platform(store, api_keys=["k"])
    try:
        t = tab(p.url, key="k")
        page = t.page
        t.open(f"#/jobs/{job.id}", "job")
        assert page.get_attribute("#job-state", "data-state") == "succeeded"
        assert page.locator("#pareto circle.point.passed").count() == 3
        assert page.locator("#pareto circle.point.other").count() == 1  # the error was never measured
        assert page.locator("#pareto polyline.frontier").count() == 1
        assert page.locator("#pareto circle.best").count() == 1
        assert "perplexity drop" in page.text_content("#pareto") and "latency against the original" in \
            page.text_content("#pareto")
        assert page.locator("#search-records tbody tr").count() == 5
    finally:
        p.close()

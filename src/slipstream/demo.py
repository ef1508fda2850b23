"""The main job: SmolLM2-135M-Instruct in, CTranslate2 float32/int8/int16 out, measured side by side."""

from __future__ import annotations

from dataclasses import dataclass

from slipstream.benchmark.run import BenchSettings
from slipstream.comparison import Comparison, compare
from slipstream.evaluation.run import EvalSettings
from slipstream.progress import Progress, or_null
from slipstream.store import Store

MODEL = "smollm2-135m"
# Each recipe is a list of (technique, options) steps applied in order.
RECIPES: tuple[tuple[tuple[str, dict], ...], ...] = (
    (("ctranslate2", {"quantization": "float32"}),),
    (("ctranslate2", {"quantization": "int8"}),),
    (("ctranslate2", {"quantization": "int16"}),),
    # CTranslate2 int8 quantizes activations per token; SmoothQuant smoothing first recovers most of the loss.
    (("smoothquant", {"alpha": 0.7}), ("ctranslate2", {"quantization": "int8"})),
)


@dataclass(frozen=True)
class DemoSettings:
    model: str = MODEL
    recipes: tuple[tuple[tuple[str, dict], ...], ...] = RECIPES
    eval_tokens: int = 8_192  # first N WikiText-2 test tokens (all ~290k take hours on a few CPU cores)
    window: int = 1024
    stride: int = 512
    output_tokens: int = 64
    batch_sizes: tuple[int, ...] = (1, 8)
    repeats: int = 5
    rounds: int = 1  # benchmark rounds, interleaved across variants
    # Benchmarks run one thread per engine: on a small shared machine a second thread adds noise, and
    # CTranslate2 can decode slower with two threads than with one (docs/benchmarks.md#method).
    bench_threads: int | None = 1
    eval_threads: int | None = None  # scoring long windows does use every core well


def run_demo(settings: DemoSettings | None = None, *, store: Store | None = None,
             progress: Progress | None = None) -> Comparison:
    from slipstream.models.intake import import_model
    from slipstream.pipeline import build
    from slipstream.techniques.registry import make_config

    settings = settings or DemoSettings()
    store = store or Store()
    progress = or_null(progress)
    if not store.exists(settings.model):
        import_model(settings.model, store=store, progress=progress)
    else:
        progress.log(f"{settings.model} is already in the store ({store.home})")
    names = []
    for recipe in settings.recipes:
        steps = [make_config(technique, options) for technique, options in recipe]
        names.append(build(settings.model, steps, store=store, progress=progress).name)
    return compare(
        settings.model,
        names,
        eval_settings=EvalSettings(window=settings.window, stride=settings.stride, max_tokens=settings.eval_tokens,
                                   threads=settings.eval_threads),
        bench_settings=BenchSettings(output_tokens=settings.output_tokens, batch_sizes=settings.batch_sizes,
                                     repeats=settings.repeats, threads=settings.bench_threads),
        rounds=settings.rounds,
        store=store,
        progress=progress,
    )

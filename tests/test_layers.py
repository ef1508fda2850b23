"""The package reads top to bottom: no import cycles, and no module imports a layer above its own.

The import graph is read with ``ast`` from every module under ``src/slipstream`` (nothing is imported).
The rule, checked for every ``import`` statement wherever it is written (at module level, or inside a
function to keep a heavy library lazy):

- no cycles, at module level or counting the imports inside functions (an import moved into a function
  to dodge a cycle is still a cycle in the design);
- a module imports only modules of its own layer or of the layers before it in :data:`LAYERS`.

Imports under ``if TYPE_CHECKING:`` are annotations only and are not counted; ``importlib`` imports by
string (the technique registry's ``"module:function"``, ``open_engine``'s engine table) are not seen, which
is how an upper layer is named by data without being imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import slipstream

ROOT = Path(slipstream.__file__).parent

# The layers, lowest first, in the order a model travels: in, transformed or exported, run, measured,
# chosen, served; then the command line over all of it. A module belongs to the first layer with a
# prefix that matches its dotted name (a package prefix covers the package's modules).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # shared by every layer: errors, optional extras, the machine, progress, the config base, the tokenizer,
    # calibration text, the Pareto front, workers that die with their parent
    ("core", ("slipstream.errors", "slipstream.extras", "slipstream.home", "slipstream.jsonlines",
              "slipstream.machine", "slipstream.progress", "slipstream.devices", "slipstream.config",
              "slipstream.tokenizer", "slipstream.calibration", "slipstream.pareto", "slipstream.lifetime")),
    ("store", ("slipstream.store",)),  # models, variants and results on disk
    ("models", ("slipstream.models",)),  # where a model comes from
    ("exporters", ("slipstream.exporters",)),  # model -> files (their configs are techniques' data)
    ("techniques", ("slipstream.techniques",)),  # model -> model, and the catalog naming every technique
    ("engines", ("slipstream.engines",)),  # files -> tokens
    ("evaluation", ("slipstream.evaluation",)),  # accuracy of a variant, through an engine
    ("benchmark", ("slipstream.benchmark",)),  # speed, memory and cost of a variant, through an engine
    ("pipeline", ("slipstream.pipeline",)),  # optimize: one technique applied, the variant stored
    ("comparison", ("slipstream.comparison",)),  # variants side by side (evaluation and benchmark)
    ("report", ("slipstream.report",)),  # a comparison rendered
    ("search", ("slipstream.search",)),  # candidates optimized, measured, compared, one chosen
    ("serving", ("slipstream.serving",)),  # an engine behind the OpenAI API
    ("deploy", ("slipstream.deploy",)),  # several models' servers as replicas on Ray Serve, one endpoint
    ("platform", ("slipstream.platform",)),  # the team's service: REST API over the store, jobs, deployments
    ("demo", ("slipstream.demo",)),  # the whole path on a bundled model
    ("cli", ("slipstream.cli",)),  # one module per subcommand
    ("api", ("slipstream",)),  # the package's lazy public facade (slipstream/__init__.py)
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(name: str) -> str | None:
    """The slipstream module ``name`` refers to (a module, or a name inside one), else None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> list[tuple[str, bool]]:
    """``(imported module, at module level)`` for every slipstream import written in ``module``."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            return
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" for a in node.names] or [base]
        for target in targets:
            resolved = _resolve(target) if target.startswith("slipstream") else None
            if resolved and resolved != module:
                found.append((resolved, top))
        inner = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text()), True)
    return found


GRAPH = {m: imports(m) for m in MODULES}


def layer_of(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_is_read():
    assert len(MODULES) > 100
    assert ("slipstream.engines.protocol", True) in GRAPH["slipstream.engines.transformers"]
    assert ("slipstream.engines.torch.stepper", False) in GRAPH["slipstream.engines.transformers"]
    assert ("slipstream.report.build", False) in GRAPH["slipstream.search.run"]  # inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("slipstream.tokenizer") < layer_of("slipstream.techniques.quantize.w8a8") < layer_of(
        "slipstream.engines.torch.stepper") < layer_of("slipstream.report.build") < layer_of("slipstream.search")


def test_no_import_cycles_at_module_level():
    top = {m: {t for t, at_top in edges if at_top} for m, edges in GRAPH.items()}
    assert cycles(top) == []


def test_no_import_cycles_counting_imports_inside_functions():
    assert cycles({m: {t for t, _ in edges} for m, edges in GRAPH.items()}) == []


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_nothing_imports_a_layer_above_its_own():
    upward = sorted(
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, edges in GRAPH.items() for target, _ in edges if layer_of(target) > layer_of(module))
    assert upward == []

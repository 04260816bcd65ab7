"""The package's layers: imports run one way, from the CLI down to the embedding core, with no cycles.

Every ``import``/``from ... import`` of every module is parsed (also those inside functions, the lazy ones), so a
lazy import cannot hide an upward dependency. A new subpackage must be given its layer here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sfp_rag"

# A layer may import only layers with a smaller rank (and itself). Equal ranks are siblings: no imports between them.
LAYERS = {
    "_utils": 0,
    "hits": 0,  # the search-result type, shared by the local index and the HTTP client
    # the HTTP client of `sfp-rag serve`, above hits (it returns them): httpx only, so that anything can use it
    "client": 0.5,
    "embedding": 1,
    "retrieval": 2,
    "evaluation": 3,
    "training": 4,
    "integrations": 5,
    "serving": 6,
    "distributed": 6,
    "cli": 7,
}
FACADE = {"sfp_rag", "sfp_rag.__main__"}  # the lazy public names and `python -m sfp_rag`: they point at everything


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, name: str | None = None, source: str | None = None) -> set[str]:
    """Absolute names of the sfp_rag modules (or packages) that ``path`` imports, anywhere in the file."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    source = path.read_text(encoding="utf-8") if source is None else source
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "sfp_rag")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "sfp_rag":
                continue
            found.add(target)
            # `from . import x` imports the module x of that package
            found.update(
                f"{target}.{a.name}"
                for a in node.names
                if (PACKAGE.parent / f"{target}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
            )
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    homeless = [m for m in MODULES if m not in FACADE and layer_of(m) not in LAYERS]
    assert not homeless, f"modules outside the known layers (add the subpackage to LAYERS): {homeless}"


@pytest.mark.parametrize("module", [m for m in MODULES if m not in FACADE])
def test_imports_run_one_way(module):
    mine = layer_of(module)
    upward = []
    for target in sorted(imported_modules(MODULES[module])):
        theirs = layer_of(target)
        if target == "sfp_rag":
            if mine != "cli":
                upward.append(f"{target} (the facade; only the CLI may import it)")
            continue
        if theirs != mine and LAYERS[theirs] >= LAYERS[mine]:
            upward.append(f"{target} (layer {theirs}, rank {LAYERS[theirs]} >= {mine}'s {LAYERS[mine]})")
    assert not upward, f"{module} imports upward or sideways: {upward}"


def test_no_import_cycles():
    graph = {m: {t for t in imported_modules(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    for m in FACADE:
        graph[m] = set()
    graph = {m: {t for t in ts if t not in FACADE} for m, ts in graph.items()}
    # iterative DFS with colours: a grey node reached again is a cycle
    colour = dict.fromkeys(graph, 0)
    for start in graph:
        if colour[start]:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        colour[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour[child] == 1:
                cycle = path[path.index(child) :] + [child]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            elif colour[child] == 0:
                colour[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)


def test_the_checker_sees_an_upward_import():
    """The parser resolves relative and lazy imports: an embedding module reaching into retrieval is caught."""
    source = "def f():\n    from ..retrieval.builder import build_index\n    from . import prompts\n"
    probe = PACKAGE / "embedding" / "probe.py"  # never written: the source is given
    found = imported_modules(probe, "sfp_rag.embedding.probe", source)
    assert found == {"sfp_rag.retrieval.builder", "sfp_rag.embedding", "sfp_rag.embedding.prompts"}
    assert LAYERS[layer_of("sfp_rag.retrieval.builder")] > LAYERS["embedding"]


def test_importing_the_package_imports_no_torch():
    code = "import sys, sfp_rag, sfp_rag.cli; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"], "importing sfp_rag (or its CLI) must not import torch or transformers"


def test_option_lists_repeated_to_keep_imports_light_agree_with_the_library():
    """The CLI and the report repeat a few tuples of names instead of importing torch-heavy modules at start-up."""
    from sfp_rag.cli.core import encoder_options
    from sfp_rag.cli.train_commands import train
    from sfp_rag.embedding.pooling import POOLING_MODES
    from sfp_rag.evaluation.report import OBJECTIVE_NAMES
    from sfp_rag.training.config import OBJECTIVES

    options = {p.name: p for p in train.params}
    assert tuple(options["objective"].type.choices) == OBJECTIVES
    assert tuple(options["pooling"].type.choices) == POOLING_MODES
    shared = {p.name: p for p in encoder_options(lambda **kw: None).__click_params__}
    assert tuple(shared["pooling"].type.choices) == POOLING_MODES
    assert sorted(OBJECTIVE_NAMES) == sorted(OBJECTIVES)

"""The house in layers: every import in glowrl goes down a layer (or stays in its own), and none forms a cycle.

Every module of `glowrl/` is parsed (not imported), and every import is read: at module level and inside functions,
relative and absolute, and module names given as strings (`importlib.import_module("glowrl.x")`, or a table of them
that a lazy `__getattr__` imports from): any string constant that is exactly a glowrl module name counts. Each module
belongs to the layer of the longest prefix listed in [`LAYERS`]; a module that matches none fails the test, so a new
module has to be given a place. Also: only the CLI exits or has a `__main__` block.

python -m pytest tests/test_layers.py
"""

import ast
from pathlib import Path

import pytest
from utils import REPO


PACKAGE = REPO / "glowrl"
# Lowest first. A module may import modules of its own layer or of lower ones.
LAYERS = [
    (
        "base utilities",
        [
            "glowrl._version",
            "glowrl.errors",
            "glowrl.io",
            "glowrl.chat",
            "glowrl.recipe",
            "glowrl.outputs",
            "glowrl.checkpoints",
            "glowrl.processes",
            "glowrl.threads",
        ],
    ),
    (
        "grading, toy task, models, TRL and vLLM hooks",
        [
            "glowrl.grading",
            "glowrl.toy",
            "glowrl.models",
            "glowrl.convert",
            "glowrl._trl_compat",
            "glowrl.vllm_support",
            "glowrl.vllm_gloo",
        ],
    ),
    ("data", ["glowrl.data"]),
    (
        "method",
        [
            "glowrl.rewards",
            "glowrl.rollout_entropy",
            "glowrl.glow.weights",
            "glowrl.glow.arguments",
            "glowrl.evaluation.eval_sets",
            "glowrl.evaluation.metrics",
            "glowrl.evaluation.report",
            "glowrl.evaluation.stats",
        ],
    ),
    ("trainers, evaluation API, teacher sampling", ["glowrl.glow", "glowrl.evaluation", "glowrl.teacher"]),
    ("RL algorithms", ["glowrl.rl"]),
    ("stages", ["glowrl.stages"]),
    ("launchers", ["glowrl.launch"]),
    ("pipeline", ["glowrl.pipeline"]),
    ("cluster", ["glowrl.slurm"]),
    ("studies", ["glowrl.study"]),
    ("demo", ["glowrl.demo"]),
    ("CLI and package facade", ["glowrl.cli", "glowrl.__main__", "glowrl"]),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    """Index in LAYERS of the longest listed prefix of `module` (`glowrl` itself matches only exactly)."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "glowrl" and module.startswith(prefix + "."))
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layers.py: give it one")
    return best


def imports_of(module: str, path: Path) -> set[str]:
    """The glowrl modules `module` imports anywhere in its file (a name imported from a package counts as its module
    when it is one)."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [source] + [f"{source}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value != "glowrl":
            # import_module("glowrl.x"), or a lazy-export table; the bare name is also a distribution name, a tag...
            targets = [node.value]
        found.update(t for t in targets if t in MODULES)
    found.discard(module)
    return found


GRAPH = {module: imports_of(module, path) for module, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, as the list of modules around it, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_imports_only_go_down_the_layers():
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in GRAPH.items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_see_function_level_and_import_module_imports():
    # The walker must see what the layering rules are about, or the two tests above prove nothing.
    assert "glowrl.glow.trainer" in GRAPH["glowrl.stages.sft"]  # inside `run`
    assert "glowrl.glow.config" in GRAPH["glowrl"]  # import_module("glowrl.glow.config") in the package facade
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", [m for m in MODULES if not m.startswith(("glowrl.cli", "glowrl.__main__"))])
def test_only_the_cli_exits_or_has_a_main_block(module):
    tree = ast.parse(MODULES[module].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "exit" and getattr(node.value, "id", None) == "sys":
            pytest.fail(f"{module} calls sys.exit; raise a glowrl.errors error and let the CLI exit")
        if isinstance(node, ast.Compare) and any(
            isinstance(c, ast.Constant) and c.value == "__main__" for c in node.comparators
        ):
            pytest.fail(f"{module} has a __main__ block; commands belong in glowrl.cli")

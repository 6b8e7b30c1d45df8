"""The library's architecture, read from the source with ``ast`` (nothing is imported): the import
graph between its packages follows the layers below, there are no import cycles between modules,
and no module is over 400 lines. Modules are discovered from the file tree, so new files are
checked without changes here; a new top-level package or module must be placed in LAYERS.

Layers (a package may import only from its own layer or lower ones)::

    0  core
    1  data, models, maps
    2  explainers
    3  attacks
    4  evaluation, training
    5  arena
    6  claims, chapter

``arena`` (issue 27's harness) uses everything below it and nothing above; no module below it may
import it (a chapter's run key hashes the modules it imports). ``claims`` is a top-layer module
(only ``chapter`` may import it) that itself may import only ``core``. The package root ``reliable_saliency/__init__.py`` counts as ``core``.

Every import statement counts, wherever it is (function bodies and ``TYPE_CHECKING`` blocks
included): the layers are about dependencies, not about when an import runs. Relative imports
are resolved against the importing module's package. Importing ``a.b.c`` from outside ``a.b``
also runs ``a.b/__init__.py``, so for cycles such an import is also an edge to that package.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"
ROOT = "reliable_saliency"
MAX_LINES = 400

LAYERS = {
    "core": 0,
    "data": 1, "models": 1, "maps": 1,
    "explainers": 2,
    "attacks": 3,
    "evaluation": 4, "training": 4,
    "arena": 5,
    "claims": 6, "chapter": 6,
    "__main__": 7,  # python -m reliable_saliency: the command line, above everything
}
# Packages whose own imports are restricted further than their layer allows.
MAY_IMPORT_ONLY = {"claims": {"core"}}
ROOT_UNIT = "core"  # what the package root (reliable_saliency/__init__.py) counts as


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. reliable_saliency.maps.similarity
    target: str  # imported module of the library (a submodule where one is named)
    where: str  # file:line and the statement, for messages


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


def discover(lib: Path) -> dict[str, Module]:
    """Every module of the ``reliable_saliency`` package under ``lib``, by dotted name."""
    modules = {}
    for path in sorted((lib / ROOT).rglob("*.py")):
        parts = path.relative_to(lib).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        modules[name] = Module(name, path, is_package)
    return modules


def _resolve(module: Module, node: ast.ImportFrom) -> str | None:
    """The absolute module named by ``from ... import`` (None: outside the library)."""
    if node.level == 0:
        base = node.module or ""
    else:
        package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
        if node.level - 1 >= len(package):
            raise ValueError(f"{module.path}:{node.lineno}: relative import beyond the top-level package")
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    return base if base == ROOT or base.startswith(ROOT + ".") else None


def _known(name: str, modules: dict[str, Module]) -> str:
    """``name`` itself if it is a module, else its longest prefix that is one."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports(modules: dict[str, Module], lib: Path) -> list[Import]:
    """All imports of library modules by library modules, relative ones resolved."""
    found = []
    for module in modules.values():
        source = module.path.read_text()
        tree = ast.parse(source, filename=str(module.path))
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name == ROOT or a.name.startswith(ROOT + ".")]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, node)
                if base is not None:  # `from pkg import name`: the submodule pkg.name where it is one
                    targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            if targets:
                where = f"{module.path.relative_to(lib)}:{node.lineno} `{ast.unparse(node)}`"
                for target in dict.fromkeys(targets):
                    found.append(Import(module.name, _known(target, modules), where))
    return found


def unit(name: str) -> str:
    """The top-level package or module a module belongs to (``maps``, ``data``, ...)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ROOT_UNIT


def _describe(name: str) -> str:
    return f"{name} (layer {LAYERS[name]})" if name in LAYERS else name


def layer_violations(modules: dict[str, Module], found: list[Import]) -> list[str]:
    order = " < ".join(
        ", ".join(n for n, layer in LAYERS.items() if layer == level) + f" ({level})"
        for level in sorted(set(LAYERS.values()))
    )
    problems = [
        f"{name}: {unit(name)!r} is in no layer; add it to LAYERS in tests/{Path(__file__).name}"
        for name in modules if unit(name) not in LAYERS
    ]
    for imp in found:
        source, target = unit(imp.source), unit(imp.target)
        if source == target or source not in LAYERS or target not in LAYERS:
            continue
        if source in MAY_IMPORT_ONLY:
            if target not in MAY_IMPORT_ONLY[source]:
                problems.append(
                    f"{imp.where}: {source} may import only {sorted(MAY_IMPORT_ONLY[source])}, "
                    f"not {target} ({imp.source} imports {imp.target})"
                )
        elif LAYERS[target] > LAYERS[source]:
            problems.append(
                f"{imp.where}: {_describe(source)} must not import {_describe(target)} "
                f"({imp.source} imports {imp.target}); layers: {order}"
            )
    return problems


def import_cycles(modules: dict[str, Module], found: list[Import]) -> list[str]:
    """Each import cycle between modules, as a path with the statements that close it."""
    edges: dict[str, dict[str, str]] = {name: {} for name in modules}
    for imp in found:
        edges[imp.source].setdefault(imp.target, imp.where)
        # importing a.b.c from outside a.b runs a/__init__ and a/b/__init__ first
        parts = imp.target.split(".")
        for i in range(2, len(parts)):
            package = ".".join(parts[:i])
            if package in modules and not (imp.source == package or imp.source.startswith(package + ".")):
                init = package.replace(".", "/") + "/__init__.py"
                edges[imp.source].setdefault(package, f"{imp.where}, which runs {init}")

    # Tarjan's strongly connected components (iterative)
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], [0]
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in edges[node]:
                        components.append(component)

    cycles = []
    for component in components:
        start = min(component)
        previous, frontier = {start: None}, [start]
        closing = None
        while frontier and closing is None:  # shortest path from start back to start
            following = []
            for node in frontier:
                for child in edges[node]:
                    if child == start:
                        closing = node
                        break
                    if child in component and child not in previous:
                        previous[child] = node
                        following.append(child)
                if closing is not None:
                    break
            frontier = following
        path = [closing]
        while previous[path[-1]] is not None:
            path.append(previous[path[-1]])
        path.reverse()
        steps = [f"{a} -> {b}  [{edges[a][b]}]" for a, b in zip(path, path[1:] + [start])]
        cycles.append("import cycle:\n    " + "\n    ".join(steps))
    return cycles


def oversized(lib: Path, limit: int = MAX_LINES) -> list[str]:
    problems = []
    for path in sorted(lib.rglob("*.py")):
        lines = len(path.read_text().splitlines())
        if lines > limit:
            problems.append(f"{path.relative_to(lib.parent)} has {lines} lines (at most {limit}); split it")
    return problems


# --------------------------------------------------------------------------------------- the tests


def test_imports_follow_the_layers():
    modules = discover(LIB)
    assert f"{ROOT}.core" in modules and len(modules) > 20, f"library not found under {LIB}"
    problems = layer_violations(modules, imports(modules, LIB))
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def test_no_import_cycles():
    modules = discover(LIB)
    cycles = import_cycles(modules, imports(modules, LIB))
    assert not cycles, "\n".join(cycles)


def test_no_module_is_over_400_lines():
    assert any(LIB.rglob("*.py")), f"no modules under {LIB}"
    problems = oversized(LIB)
    assert not problems, "modules over the size limit:\n" + "\n".join(problems)


def test_the_checks_catch_violations(tmp_path):
    """The checks themselves, on a small fake library with one of each problem."""
    files = {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/inputs.py": "def f():\n    from ..maps import similarity  # upwards, and closes a cycle\n",
        "core/options.py": "from . import inputs\nfrom .inputs import f\n",
        "maps/__init__.py": "from .similarity import g\n",
        "maps/similarity.py": "import torch\nfrom reliable_saliency.core.options import f\ng = f\n",
        "explainers/__init__.py": "from ..maps import g\nfrom reliable_saliency import maps\n",
        "attacks/ghorbani.py": "from ..claims import verdict\n",
        "claims.py": "from .core import inputs\nfrom .maps.similarity import g\n",
        "chapter/run.py": "from .. import claims\nfrom ..attacks import ghorbani\n",
        "extras.py": "x = 1\n" * (MAX_LINES + 1),
        # a cycle only through a package __init__: maps.checks -> models/__init__ -> ... -> maps.checks
        "models/__init__.py": "from .architectures import net\n",
        "models/architectures.py": "from ..maps.checks import c\nnet = c\n",
        "models/smoothing.py": "s = 1\n",
        "maps/checks.py": "from ..models.smoothing import s\nc = s\n",
    }
    lib = tmp_path / "lib"
    for name, text in files.items():
        (lib / ROOT / name).parent.mkdir(parents=True, exist_ok=True)
        (lib / ROOT / name).write_text(text)
    modules = discover(lib)
    found = imports(modules, lib)
    pairs = {(i.source.removeprefix(ROOT + "."), i.target.removeprefix(ROOT + ".")) for i in found}
    assert pairs == {
        ("core.inputs", "maps.similarity"), ("core.options", "core.inputs"),
        ("maps", "maps.similarity"), ("maps.similarity", "core.options"),
        ("explainers", "maps"), ("attacks.ghorbani", "claims"),
        ("claims", "core.inputs"), ("claims", "maps.similarity"),
        ("chapter.run", "claims"), ("chapter.run", "attacks.ghorbani"),
        ("models", "models.architectures"), ("models.architectures", "maps.checks"),
        ("maps.checks", "models.smoothing"),
    }

    problems = layer_violations(modules, found)

    def one(text):
        (hit,) = [p for p in problems if text in p]
        return hit

    assert len(problems) == 4, problems
    upward = one("core/inputs.py:2")
    assert "reliable_saliency/core/inputs.py:2 `from ..maps import similarity`" in upward
    assert "core (layer 0) must not import maps (layer 1)" in upward
    assert one("'extras' is in no layer").startswith("reliable_saliency.extras:")
    assert "`from .maps.similarity import g`: claims may import only ['core']" in one("claims.py:2")
    assert "attacks (layer 3) must not import claims (layer 6)" in one("attacks/ghorbani.py:1")

    cycles = import_cycles(modules, found)
    assert len(cycles) == 2, cycles
    (explicit,) = [c for c in cycles if "core.inputs" in c]
    assert "reliable_saliency.core.inputs -> reliable_saliency.maps.similarity" in explicit
    assert "reliable_saliency.core.options -> reliable_saliency.core.inputs" in explicit
    assert "core/inputs.py:2 `from ..maps import similarity`" in explicit
    (through_init,) = [c for c in cycles if "maps.checks" in c]
    assert "reliable_saliency.maps.checks -> reliable_saliency.models  [" in through_init
    assert "which runs reliable_saliency/models/__init__.py" in through_init

    (too_long,) = oversized(lib)
    assert too_long.startswith("lib/reliable_saliency/extras.py has 401 lines")

"""Which part of sagepose imports which, read from the source (every ``import``, at module level or inside a
function): no module of ``sagepose/`` reaches itself again, and every import points down the layers that
docs/DESIGN.md ("Which part imports which") lists -- the same list as :data:`LAYERS` here."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sagepose"

# bottom to top: a part imports parts of its own layer and of the layers below it, never one above
LAYERS = (
    ("errors", "version", "fileio", "image", "geometry", "keypoint_sets", "keypoints", "keypoint_maps", "codecs",
     "configs", "hub", "viz"),
    ("models",),
    ("config",),
    ("data",),
    ("eval", "ssl"),
    ("recipe", "translate", "video", "onnx_model"),
    ("convert", "dataset_view", "detect", "infer"),
    ("api",),
    ("train",),
    ("demo",),
    ("cli", "sagepose"),  # "sagepose": the package's own __init__ (sagepose.load)
)
# pairs of parts that never import each other, whatever their layers (DESIGN.md says why)
NEVER = {("data", "models")}


def module_files(package: Path) -> dict[str, Path]:
    """``{"sagepose.data.coco": path, "sagepose.data": path of its __init__.py, ...}`` for every module."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement asks for (``from A import b``: ``A.b``, which is ``A`` itself when
    ``b`` is no module of it)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: from the module's own package upwards
        anchor = module.split(".")
        anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
        base = ".".join(anchor + ([base] if base else []))
    return [f"{base}.{alias.name}" for alias in node.names]


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the sagepose modules it imports anywhere in its file. Importing ``a.b.c`` also runs the
    ``__init__`` of each package on the way (``a.b``), so that counts as an import of it too, unless the importer
    lives inside that package (Python has run it first)."""
    modules = module_files(package)
    root = package.name
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for name in _imported(node, module, is_package):
                if name != root and not name.startswith(root + "."):
                    continue
                while name not in modules:  # ``from A import some_function``: the module A
                    name = name.rpartition(".")[0]
                graph[module].add(name)
                parts = name.split(".")
                for i in range(2, len(parts)):  # the packages on the way
                    package_on_way = ".".join(parts[:i])
                    if module != package_on_way and not module.startswith(package_on_way + "."):
                        graph[module].add(package_on_way)
        graph[module].discard(module)
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of modules that reach one another (Tarjan's strongly connected components of two or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One import cycle (``[a, b, ..., a]``) in each of :func:`circles`."""
    return [_cycle_in(graph, group) for group in circles(graph)]


def _cycle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest cycle through the group's first module (breadth-first inside the group)."""
    start = min(group)
    parent = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    path = [v]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle in {sorted(group)}")


def part(module: str) -> str:
    """``sagepose.data.coco`` -> ``data``; the package's own ``__init__`` -> ``sagepose``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import that points up the layers or between a :data:`NEVER` pair, and each part not in any layer."""
    layer = {p: i for i, names in enumerate(LAYERS) for p in names}
    found = sorted({f"{part(m)}: not in LAYERS (docs/DESIGN.md)" for m in graph if part(m) not in layer})
    for m in sorted(graph):
        for t in sorted(graph[m]):
            a, b = part(m), part(t)
            if a == b or a not in layer or b not in layer:
                continue
            if layer[b] > layer[a]:
                found.append(f"{m} -> {t}: {a} (layer {layer[a] + 1}) imports {b} (layer {layer[b] + 1}, above it)")
            elif (a, b) in NEVER or (b, a) in NEVER:
                found.append(f"{m} -> {t}: {a} and {b} never import each other")
    return found


def test_no_module_of_sagepose_imports_itself_through_others():
    graph = import_graph()
    found = [f"{' -> '.join(_cycle_in(graph, group))} (the circle holds {', '.join(sorted(group))})"
             for group in circles(graph)]
    assert not found, "import cycles (function-level imports count):\n" + "\n".join(found)


def test_imports_point_down_the_layers_design_md_lists():
    found = layer_violations(import_graph())
    assert not found, "imports against docs/DESIGN.md's layers:\n" + "\n".join(found)


def test_design_md_lists_the_layers_this_test_enforces():
    text = (PACKAGE.parent / "docs" / "DESIGN.md").read_text()
    section = text.split("## Which part imports which", 1)[1].split("\n## ", 1)[0]
    for i, names in enumerate(LAYERS):
        line = next((s for s in section.splitlines() if s.startswith(f"{i + 1}. ")), "")
        listed = set(re.findall(r"`([a-z_]+)`", line)) & set(sum(LAYERS, ()))
        assert listed == set(names), f"DESIGN.md's layer {i + 1}: lists {sorted(listed)}, the test {sorted(names)}"
    for a, b in NEVER:
        assert f"`{a}` and `{b}` never import each other" in section


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "sagepose" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "sagepose"


def test_a_function_level_import_closing_a_circle_is_found(tmp_path):
    package = _write(tmp_path, {
        "__init__.py": "",
        "api.py": "from sagepose.train import run\n",
        "train/__init__.py": "",
        "train/run.py": "def test():\n    from sagepose.api import load_weights\n",
        "errors.py": "",
    })
    assert cycles(import_graph(package)) == [["sagepose.api", "sagepose.train.run", "sagepose.api"]]


def test_a_package_init_run_on_the_way_counts_as_imported(tmp_path):
    package = _write(tmp_path, {
        "__init__.py": "",
        "data/__init__.py": "from sagepose.data.mpii import load_mpii\n",
        "data/coco.py": "",
        "data/mpii.py": "from sagepose.eval import head_size\n",
        "eval/__init__.py": "from sagepose.eval.coco import score\n",
        "eval/coco.py": "def score():\n    from sagepose.data.coco import read\n",
    })
    graph = import_graph(package)
    assert graph["sagepose.eval.coco"] == {"sagepose.data", "sagepose.data.coco"}
    assert cycles(graph) == [["sagepose.data", "sagepose.data.mpii", "sagepose.eval", "sagepose.eval.coco",
                              "sagepose.data"]]


@pytest.mark.parametrize("source, target, message", [
    ("data/coco.py", "from sagepose.models.vit import ViT\n", "data and models never import each other"),
    ("models/vit.py", "def f():\n    import sagepose.train.run\n", "models (layer 2) imports train (layer 9"),
])
def test_an_import_against_the_layers_is_named(tmp_path, source, target, message):
    files = {"__init__.py": "", "data/__init__.py": "", "data/coco.py": "", "models/__init__.py": "",
             "models/vit.py": "", "train/__init__.py": "", "train/run.py": ""}
    graph = import_graph(_write(tmp_path, {**files, source: target}))
    assert any(message in line for line in layer_violations(graph)), layer_violations(graph)

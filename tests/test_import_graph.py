"""The package's imports follow the data flow one way (README, "What runs where").

Layers, bottom to top: the reference ``transforms/`` (with the helpers it needs), the
GPU glue ``device.py``, the kernels ``fused/``, then ``stage.py`` / ``loader.py`` wiring
them. Every import counts, the lazy ones inside functions too, because a lazy import
still ties the two modules together for whoever reads or changes them.
"""
from __future__ import annotations

import ast
from pathlib import Path

import gpuaug

PACKAGE = Path(gpuaug.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``{module: {gpuaug modules it imports}}``, from the source of every module."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}

    def owner(name: str) -> str | None:             # gpuaug.fused.host.X -> gpuaug.fused.host
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # ``from . import fused`` imports the submodule, ``from .x import f`` module x
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                           for alias in node.names]
            else:
                continue
            found |= {owner(t) for t in targets if t.split(".")[0] == "gpuaug"} - {None, name}
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (iterative Tarjan)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
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


def in_layer(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


def test_the_graph_is_read_from_the_source():
    graph = import_graph()
    # Known edges, lazy ones included, so a broken parser cannot pass the checks below.
    assert "gpuaug.fused.plan" in graph["gpuaug.fused.run"]
    assert "gpuaug.transforms._base" in graph["gpuaug.fused.plan"]
    assert "gpuaug.device" in graph["gpuaug.fused.cuda"]
    assert {"gpuaug.stage", "gpuaug.fused", "gpuaug.device"} <= graph["gpuaug.loader"]
    assert "gpuaug.fused.cuda" in graph["gpuaug.fused"]                      # inside cuda_backend()


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_imports_go_one_way():
    graph = import_graph()
    wrong = []
    for module, imported in graph.items():
        for target in imported:
            if in_layer(module, "gpuaug.transforms") and (in_layer(target, "gpuaug.fused")
                                                         or target == "gpuaug.device"):
                wrong.append(f"{module} -> {target} (the reference must not know the kernels or the GPU glue)")
            if module == "gpuaug.device" and (in_layer(target, "gpuaug.fused")
                                               or in_layer(target, "gpuaug.transforms")):
                wrong.append(f"{module} -> {target} (the GPU glue depends on nothing above it)")
            if (in_layer(module, "gpuaug.fused") or in_layer(module, "gpuaug.transforms")) and target in (
                    "gpuaug.stage", "gpuaug.loader"):
                wrong.append(f"{module} -> {target} (the stage and the loader sit on top)")
            if module == "gpuaug.native" and target not in ("gpuaug._paths", "gpuaug.errors"):
                wrong.append(f"{module} -> {target} (the compiled helpers sit below every layer)")
    assert wrong == []
    assert graph["gpuaug.native"] <= {"gpuaug._paths", "gpuaug.errors"} and "gpuaug.native" in graph["gpuaug.decode"]

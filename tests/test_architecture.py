"""The house holds its floors: read every import of the package (also those inside functions) and fail when a
module imports one of a higher floor or of another room on its own floor, or when modules import each other in a
circle. The floors are those of docs/architecture.md."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "diffuseg"

# Bottom up; a room is a top-level module or sub-package of diffuseg ("diffuseg" itself is the package face).
FLOORS: list[set[str]] = [
    {"diffuseg", "errors", "enums"},
    {"labels", "runlock", "runtime", "nets"},
    {"files"},
    {"config"},
    {"data", "diffusion", "checkpoint", "presets"},
    {"methods"},
    {"inference"},
    {"evaluation"},
    {"training"},
    {"demo"},
    {"cli"},
]
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports() -> dict[str, set[str]]:
    """Module -> the diffuseg modules it imports (``from a.b import c`` counts as ``a.b.c`` when that is a module)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("diffuseg"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    graph[name].add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name.split(".")[0] == "diffuseg")
    return graph


def test_every_room_has_a_floor() -> None:
    rooms = {room(m) for m in imports()}
    assert rooms <= set(FLOOR), f"rooms without a floor (add them to FLOORS): {rooms - set(FLOOR)}"


def test_no_import_runs_up_or_sideways() -> None:
    wrong = []
    for importer, targets in imports().items():
        for target in targets:
            a, b = room(importer), room(target)
            if a != b and FLOOR[b] >= FLOOR[a]:
                side = "up" if FLOOR[b] > FLOOR[a] else "sideways"
                wrong.append(f"{importer} -> {target} ({side}: floor {FLOOR[a]} to {FLOOR[b]})")
    assert not wrong, "\n".join(sorted(wrong))


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_two_modules_import_each_other() -> None:
    graph = {m: {t for t in ts if t != m and not m.startswith(f"{t}.")} for m, ts in imports().items()}
    assert not _circles(graph), _circles(graph)


def test_the_checker_sees_a_circle_and_an_upward_import() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert FLOOR[room("diffuseg.training.run")] > FLOOR[room("diffuseg.checkpoint")]


def test_no_module_is_over_500_lines() -> None:
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long

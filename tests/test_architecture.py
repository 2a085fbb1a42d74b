"""The shape of the code, checked in CI (issue 11, "Narrow dependencies").

- No import cycle among ``bot``, ``procedures`` and ``storage``: every import counts, those
  under ``TYPE_CHECKING`` and those inside functions too (a lazy import that dodges a cycle at
  run time is still a cycle for the reader).
- Only the composition root (``bot/wiring.py``) and the entry points that build it
  (``bot/modes.py``, ``bot/cli.py`` and the local shell ``bot/shell/``, a command-line entry
  point) import ``bot.wiring`` or the name ``Services``. Everything else is handed what it
  uses, typed with the protocols of ``bot.ports``.
- Buttons are registered explicitly (``bot.listeners.BUTTONS``), not by an import side effect.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "procedures", "storage")

# The composition root and the command-line entry points that build it.
MAY_IMPORT_WIRING = ("bot/wiring.py", "bot/modes.py", "bot/cli.py", "bot/shell/")


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components of more than one module (cycles) and any
    module that imports itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in graph:
                    continue
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return found


def test_tarjan_finds_cycles_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": set(), "f": {"f"},
             "g": {"outside"}}
    assert sorted(strongly_connected(graph)) == [["a", "b", "c"], ["f"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


@pytest.fixture(scope="module")
def import_graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def _describe(graph: grimp.ImportGraph, component: list[str]) -> str:
    members = set(component)
    lines = []
    for importer in component:
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & members):
            details = graph.get_import_details(importer=importer, imported=imported)
            where = ", ".join(str(d["line_number"]) for d in details)
            lines.append(f"    {importer} -> {imported} (line {where})")
    return f"  {len(component)} modules:\n" + "\n".join(lines)


def test_no_import_cycle(import_graph: grimp.ImportGraph) -> None:
    graph = {module: import_graph.find_modules_directly_imported_by(module)
             for module in import_graph.modules}
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles (pass the dependency in, or move the shared part):\n" + \
        "\n".join(_describe(import_graph, c) for c in cycles)


def _python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _wiring_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """Every import of ``bot.wiring`` or of a name ``Services`` (wherever it is imported from),
    at module level, under TYPE_CHECKING or inside a function."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {alias.name}") for alias in node.names
                      if alias.name == "bot.wiring" or alias.name.startswith("bot.wiring.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            module = node.module or ""
            names = [alias.name for alias in node.names]
            if module == "bot.wiring" or module.startswith("bot.wiring."):
                found.append((node.lineno, f"from {module} import {', '.join(names)}"))
            elif module == "bot" and "wiring" in names:
                found.append((node.lineno, "from bot import wiring"))
            elif "Services" in names:
                found.append((node.lineno, f"from {module} import Services"))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names = [alias.name for alias in node.names]
            if node.module == "wiring" or "wiring" in names or "Services" in names:
                found.append((node.lineno, f"relative import of {node.module or names}"))
    return found


def _allowed(relative: str) -> bool:
    return any(relative == allowed or (allowed.endswith("/") and relative.startswith(allowed))
               for allowed in MAY_IMPORT_WIRING)


def test_only_the_root_and_the_cli_import_wiring() -> None:
    offenders = []
    for path in _python_files("bot"):
        relative = path.relative_to(ROOT).as_posix()
        if _allowed(relative):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=relative)
        offenders += [f"{relative}:{line}: {text}" for line, text in _wiring_imports(tree)]
    assert not offenders, (
        "only the composition root and the CLI may import bot.wiring or Services; type the "
        "dependency with a protocol of bot.ports instead:\n" + "\n".join(offenders))


def test_the_wiring_check_sees_every_form_of_import() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from bot.wiring import Services\n"
        "def f():\n"
        "    import bot.wiring\n"
        "    from bot import wiring\n"
        "from .wiring import build_services\n"
        "from bot.elsewhere import Services\n"
        "from bot.ports import HandlerServices\n")
    lines = sorted(line for line, _ in _wiring_imports(ast.parse(source)))
    assert lines == [3, 5, 6, 7, 8]


def test_the_allowed_importers_exist() -> None:
    for allowed in MAY_IMPORT_WIRING:
        assert (ROOT / allowed).exists(), f"{allowed} is gone: update MAY_IMPORT_WIRING"


def test_only_the_allowed_importers_import_wiring_per_the_graph(
        import_graph: grimp.ImportGraph) -> None:
    """The same rule from grimp's graph (catches what the AST walk would miss, e.g. a
    module outside bot/)."""
    importers = import_graph.find_modules_that_directly_import("bot.wiring")
    outside = sorted(m for m in importers
                     if m not in ("bot.modes", "bot.cli") and not m.startswith("bot.shell"))
    assert outside == []


def test_buttons_are_registered_explicitly() -> None:
    from bot import actions
    from bot.listeners import BUTTONS, registered_action_ids

    assert set(BUTTONS) == set(actions.ALL_ACTIONS) == registered_action_ids()
    assert all(callable(handler) for handler in BUTTONS.values())

"""The package's shape, checked: no import cycles, layers point one way, heavy libraries stay in their place."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "personascope"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at top level or inside functions; ``if TYPE_CHECKING:`` blocks excluded.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.add(sub if _is_module(sub) else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:]) if name.startswith("personascope.") else None
    return rel is not None and ((PKG / rel).with_suffix(".py").exists() or (PKG / rel / "__init__.py").exists())


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {t for t in _imports(p) if t in files and t != m} for m, p in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_the_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_personascope_modules():
    assert _cycles(_graph()) == []


def test_reports_and_records_import_nothing_back():
    graph = _graph()
    low_level = ("personascope.audits", "personascope.runner", "personascope.cli", "personascope.steering",
                 "personascope.probes", "personascope.backends", "personascope.store", "personascope.cache",
                 "personascope.models")
    for mod, targets in graph.items():
        if mod.startswith("personascope.reports") or mod in ("personascope.results", "personascope.records",
                                                             "personascope.catalog"):
            bad = sorted(t for t in targets if t.startswith(low_level))
            assert not bad, f"{mod} imports {bad}"
    for mod in ("personascope.results", "personascope.records", "personascope.catalog"):
        assert not any(t.startswith("personascope.reports") for t in graph[mod]), mod


def test_only_backends_import_transformer_lens_or_nnsight():
    for path in PKG.rglob("*.py"):
        heavy = {t.split(".")[0] for t in _imports(path)} & {"transformer_lens", "nnsight"}
        if heavy:
            assert _module_name(path).startswith("personascope.backends") or _module_name(path) == \
                "personascope.models", (path, heavy)


def test_audits_reach_the_model_only_through_public_adapter_methods():
    private = ("._steers", ".hf_model", "._forward", "._generate_ids", "._encode")
    for path in (PKG / "audits").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        hits = [p for p in private if p in text]
        assert not hits, f"{path.name} uses private adapter internals {hits}"

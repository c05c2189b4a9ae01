"""The package's import graph: layered (no cycles) and honest (no import hidden inside a function).

Bug caught: modules that import each other in a circle, held together by an import inside a function or at the
file's tail (a circle of files is one idea spread over several, and it breaks as soon as one import moves to the top).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ncsn_diffusers"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The absolute module names an `import` or `from ... import` statement names (with `from`, each imported name
    too, since it may be a submodule)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


def package_graph() -> tuple[dict[str, set[str]], list[str]]:
    """(module -> the package modules it imports, parents excluded; the imports of package modules made inside a
    function, as 'module:line statement')."""
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in files}
    graph, inner = {}, []
    for path in files:
        module, is_package = module_name(path), path.name == "__init__.py"
        tree = ast.parse(path.read_text())
        edges = set()
        for node in ast.walk(tree):
            for name in imported_names(node, module, is_package):
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name and name != module and not module.startswith(name + "."):
                    edges.add(name)
        graph[module] = edges
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                names = imported_names(node, module, is_package)
                if any(name.split(".")[0] == PACKAGE.name for name in names):
                    inner.append(f"{module}:{node.lineno} {ast.unparse(node)}")
    return graph, inner


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_checker_finds_a_cycle_and_a_clean_graph_has_none():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_package_has_no_import_cycle():
    graph, _ = package_graph()
    assert len(graph) > 50  # the walk saw the package
    assert find_cycles(graph) == []


def test_no_module_imports_the_package_inside_a_function():
    """Imports of the package's own modules sit at the top of each file, where the graph can be read."""
    _, inner = package_graph()
    assert inner == []

"""Which names each code cell of a notebook binds and which it needs from earlier cells.

Read from the cells' source with :mod:`ast` (IPython magics are translated to Python
first), nothing is run. A cell *binds* the names its top-level statements assign,
define or import; it *needs* the names it reads that it has not bound itself before
reading them (a compound statement such as ``for`` counts as binding its names before
its body reads them) - names read inside a function it defines count as needed when the cell
itself binds them nowhere (the function runs later), and a function's parameters and
local variables are not needed. Builtins are never needed. The analysis is
conservative for what the tests use it for: it may see a need that is not one (a
name read only on a branch never taken), not the reverse, except through ``exec``,
``globals()`` and the like, which the chapters do not use.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass

import nbformat

#: Names a kernel provides without any cell binding them.
PROVIDED = frozenset(dir(builtins)) | {"get_ipython", "display", "In", "Out", "exit", "quit", "__name__"}


def python_source(source: str) -> str:
    """A cell's source as plain Python (``%pip ...`` becomes ``get_ipython()...``)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def _target_names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}


def _bound_at_top(statement: ast.stmt) -> set[str]:
    """Names a top-level statement binds in the module's namespace."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            return  # its body is another scope
        if isinstance(node, ast.Lambda):
            return
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            return  # comprehension variables are local to it
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name != "*":
                    names.add((alias.asname or alias.name).split(".")[0])
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        if isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        if isinstance(node, ast.MatchAs) and node.name:
            names.add(node.name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(statement)
    return names


def _local_names(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    arguments = function.args
    names = {a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs}
    names |= {a.arg for a in (arguments.vararg, arguments.kwarg) if a is not None}
    body = function.body if isinstance(function.body, list) else [function.body]
    declared_global: set[str] = set()
    for statement in body:
        for node in ast.walk(statement):
            if isinstance(node, (ast.Global, ast.Nonlocal)):
                declared_global |= set(node.names)
        names |= _bound_at_top(statement) if isinstance(statement, ast.stmt) else set()
    return names - declared_global


def _reads(node: ast.AST, local: frozenset[str]) -> tuple[set[str], set[str]]:
    """Names ``node`` reads from outside ``local``: (read when it runs, read later by a
    function or class body it defines)."""
    now: set[str] = set()
    later: set[str] = set()

    def visit(node: ast.AST, local: frozenset[str], deferred: bool) -> None:
        into = later if deferred else now
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id not in local:
                into.add(node.id)
            return
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) and node.target.id not in local:
            into.add(node.target.id)  # `x += 1` reads x
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            arguments = node.args
            for default in arguments.defaults + [d for d in arguments.kw_defaults if d is not None]:
                visit(default, local, deferred)
            if not isinstance(node, ast.Lambda):
                for decorator in node.decorator_list:
                    visit(decorator, local, deferred)
                for argument in arguments.posonlyargs + arguments.args + arguments.kwonlyargs:
                    if argument.annotation is not None:
                        visit(argument.annotation, local, deferred)
                if node.returns is not None:
                    visit(node.returns, local, deferred)
            inner = local | _local_names(node)
            for statement in node.body if isinstance(node.body, list) else [node.body]:
                visit(statement, inner, True)
            return
        if isinstance(node, ast.ClassDef):
            for child in node.bases + node.keywords + node.decorator_list:
                visit(child, local, deferred)
            inner = local | {name for statement in node.body for name in _bound_at_top(statement)}
            for statement in node.body:
                visit(statement, inner, deferred)
            return
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            inner = local | {name for generator in node.generators for name in _target_names(generator.target)}
            for child in ast.iter_child_nodes(node):
                visit(child, inner, deferred)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, local, deferred)

    visit(node, local, False)
    return now, later


_COMPOUND = (ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith, ast.Try, ast.Match)


@dataclass(frozen=True)
class CellNames:
    """What one code cell binds and needs; ``statements`` lists, for each top-level
    statement in order, the names it binds and the names it reads."""

    binds: frozenset[str]
    needs: frozenset[str]
    statements: tuple[tuple[frozenset[str], frozenset[str]], ...]


def cell_names(source: str) -> CellNames:
    """The names a code cell binds and needs (see the module's docstring)."""
    tree = ast.parse(python_source(source))
    bound: set[str] = set()
    needs: set[str] = set()
    later: set[str] = set()
    statements = []
    for statement in tree.body:
        now, deferred = _reads(statement, frozenset())
        binds = _bound_at_top(statement)
        # A compound statement binds before its body reads (`for name in ...: use(name)`);
        # a simple one reads first (`x = x + 1`).
        own = binds if isinstance(statement, _COMPOUND) else set()
        needs |= now - bound - own
        later |= deferred
        bound |= binds
        statements.append((frozenset(binds), frozenset(now | deferred)))
    needs |= later - bound
    return CellNames(frozenset(bound), frozenset(needs - PROVIDED), tuple(statements))


def notebook_names(notebook: nbformat.NotebookNode) -> dict[int, CellNames]:
    """:func:`cell_names` of every code cell, keyed by cell index."""
    return {
        index: cell_names(cell.source)
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
    }


def binder(names: dict[int, CellNames], index: int, name: str) -> int | None:
    """The last code cell before cell ``index`` that binds ``name`` (the one whose value
    cell ``index`` reads when the notebook runs top to bottom), or ``None``."""
    earlier = [i for i in names if i < index and name in names[i].binds]
    return max(earlier) if earlier else None


def backward_slice(names: dict[int, CellNames], targets: set[int]) -> tuple[list[int], dict[int, set[str]]]:
    """The cells to run, in order, for the ``targets`` to find every name they need:
    the targets plus, transitively, the cell that binds each name a chosen cell needs.
    Also returns the names nothing binds, by cell (empty when the slice is complete)."""
    chosen, pending, unresolved = set(targets), list(targets), {}
    while pending:
        index = pending.pop()
        for name in names[index].needs:
            source = binder(names, index, name)
            if source is None:
                unresolved.setdefault(index, set()).add(name)
            elif source not in chosen:
                chosen.add(source)
                pending.append(source)
    return sorted(chosen), unresolved

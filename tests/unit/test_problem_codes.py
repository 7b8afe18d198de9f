"""PROBLEM_CODES (consent/domain/errors.py) lists exactly the codes the code base can put in a problem.

The sources are read, not run: every `problem(status, code, ...)` and every DomainError raised with a code
of its own (DomainError, Forbidden, Conflict: the classes that take `code` as their first argument), the
fixed codes of the subclasses that name their own (NotFound, VersionConflict), and what a code held in a
variable can be (e.g. the HTTP status table of consent/api/errors.py).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import consent
from consent.domain.errors import PROBLEM_CODES, DomainError

SOURCES = Path(consent.__file__).parent
# Code arguments that only pass on a code chosen elsewhere: the DomainError's own, scanned where it is raised.
FORWARDED = {"error.code"}


def _all_subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    return found.union(*(_all_subclasses(sub) for sub in found)) if found else found


def _domain_errors() -> tuple[set[str], set[str]]:
    """(classes called with a code first, classes that pass a fixed code to DomainError.__init__)."""
    for module in pkgutil.walk_packages(consent.__path__, "consent."):
        importlib.import_module(module.name)
    classes = _all_subclasses(DomainError) | {DomainError}
    takes_code = {cls.__name__ for cls in classes if cls is DomainError or "__init__" not in cls.__dict__}
    return takes_code, {cls.__name__ for cls in classes} - takes_code


def _name(call: ast.Call) -> str:
    return call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")


class _Scanner:
    def __init__(self, tree: ast.Module, path: Path) -> None:
        self.path = path
        self.module_values = self._assignments(tree.body)
        self.unresolved: list[str] = []

    @staticmethod
    def _assignments(body: list[ast.stmt]) -> dict[str, list[ast.expr]]:
        values: dict[str, list[ast.expr]] = {}
        for node in (n for statement in body for n in ast.walk(statement)):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        values.setdefault(target.id, []).append(node.value)
        return values

    def codes(self, expression: ast.expr, local: dict[str, list[ast.expr]]) -> set[str]:
        """The string constants `expression` can evaluate to, following names to what they are assigned."""
        if isinstance(expression, ast.Constant) and isinstance(expression.value, str):
            return {expression.value}
        if isinstance(expression, ast.IfExp):
            return self.codes(expression.body, local) | self.codes(expression.orelse, local)
        if isinstance(expression, ast.Name):
            assigned = local.get(expression.id) or self.module_values.get(expression.id, [])
            return set().union(*(self.codes(value, local) for value in assigned))
        if isinstance(expression, ast.Dict):
            return set().union(*(self.codes(value, local) for value in expression.values))
        if isinstance(expression, ast.Call) and isinstance(expression.func, ast.Attribute) \
                and expression.func.attr == "get":  # table.get(key, default)
            return self.codes(expression.func.value, local).union(
                *(self.codes(argument, local) for argument in expression.args[1:]))
        if ast.unparse(expression) not in FORWARDED:
            self.unresolved.append(f"{self.path.name}: {ast.unparse(expression)}")
        return set()


def emitted_codes() -> tuple[set[str], list[str]]:
    takes_code, fixed_code = _domain_errors()
    emitted: set[str] = set()
    unresolved: list[str] = []
    for path in sorted(SOURCES.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        scanner = _Scanner(tree, path)
        scopes = [(node, _Scanner._assignments(node.body)) for node in ast.walk(tree)
                  if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
        for scope, local in [(tree, {}), *scopes]:
            for call in _calls(scope):
                name = _name(call)
                if name == "problem" and len(call.args) >= 2:
                    emitted |= scanner.codes(call.args[1], local)
                elif name in takes_code and call.args:
                    emitted |= scanner.codes(call.args[0], local)
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name in fixed_code):
            for call in (n for n in ast.walk(cls) if isinstance(n, ast.Call)):
                if _name(call) == "__init__" and call.args:  # super().__init__("code", detail)
                    emitted |= scanner.codes(call.args[0], {})
        unresolved += scanner.unresolved
    return emitted, unresolved


def _calls(scope: ast.AST) -> list[ast.Call]:
    """The calls directly in `scope`, not in a function nested in it (that one is a scope of its own)."""
    calls, pending = [], list(ast.iter_child_nodes(scope))
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(node, ast.Call):
            calls.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return calls


def test_every_code_the_code_base_emits_is_listed_and_every_listed_code_is_emitted():
    emitted, unresolved = emitted_codes()
    assert unresolved == [], f"codes this scan cannot follow (name them in FORWARDED if passed on): {unresolved}"
    assert {"validation_failed", "not_found", "version_conflict", "rate_limited", "unavailable"} <= emitted
    assert sorted(emitted - PROBLEM_CODES.keys()) == [], "emitted but not in PROBLEM_CODES"
    assert sorted(PROBLEM_CODES.keys() - emitted) == [], "in PROBLEM_CODES but never emitted"


def test_codes_are_snake_case_with_a_meaning_and_a_status():
    for code, meaning in PROBLEM_CODES.items():
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", code), code
        assert re.search(r"\w.* \((\d{3}|\dxx)( or \d{3})?\)$", meaning), f"{code}: {meaning}"

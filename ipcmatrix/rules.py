"""Expected-value rules and the small, safe evaluator behind their formulas.

A rule is one of:
- ``expect``:  the exact value (``"blocks"``, ``11``, ``true``);
- ``one_of``:  a list of acceptable values;
- ``range``:   ``[low, high]`` inclusive, for quantities; a bound may be a formula;
- ``formula``: arithmetic over the run's names, compared for equality
  (``"max_dgram_qlen + 1"``, ``"2 * dgram.queue.capacity_unconnected + 2"``), or a
  list of such for a list-valued key (``"[msg_default, msgsize_default]"``);
- ``at_least`` / ``at_most``: a formula giving a bound, for loose comparisons;
- ``expect_null = true``: the value is JSON null (TOML has no null).
- ``expect_error = "text"``: the probe cannot measure the key on this platform, and its
  error says why (contains the text), as wpt expects a test's ERROR; a value is a mismatch.

Formulas are parsed with ``ast`` and only numbers, names (dotted names are observation
keys), + - * / // %, unary minus, comparisons, ``x if c else y`` and the functions in
FUNCTIONS are accepted.  Nothing is ever passed to ``eval``.
"""
from __future__ import annotations

import ast
import json
import math
import operator

RULE_KINDS = ("expect", "one_of", "range", "formula", "at_least", "at_most", "expect_null",
              "expect_error")

FUNCTIONS = {"min": min, "max": max, "ceil": math.ceil, "floor": math.floor, "abs": abs}
ARITY = {"min": (2, 99), "max": (2, 99), "ceil": (1, 1), "floor": (1, 1), "abs": (1, 1)}

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
            ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne}
MAX_FORMULA_LENGTH = 300


class FormulaError(ValueError):
    """A formula that is not in the accepted language (raised when it is parsed)."""


class MissingName(LookupError):
    """A formula names something this run did not record (an unreadable tunable, say)."""


def parse(formula):
    """Parse and vet a formula; return its AST.  Raises FormulaError with the reason."""
    if not isinstance(formula, str) or not formula.strip():
        raise FormulaError("a formula must be a non-empty string")
    if len(formula) > MAX_FORMULA_LENGTH:
        raise FormulaError(f"a formula may be at most {MAX_FORMULA_LENGTH} characters")
    try:
        tree = ast.parse(formula.strip(), mode="eval")
    except SyntaxError as exc:
        raise FormulaError(f"not a formula: {exc.msg}") from None
    for node in ast.walk(tree):
        _vet(node)
    return tree


def _vet(node):
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.USub, ast.UAdd, ast.Compare,
               ast.IfExp, ast.Call, ast.Name, ast.Attribute, ast.Constant, ast.Load, ast.List,
               *_BINARY, *_COMPARE)
    if not isinstance(node, allowed):
        raise FormulaError(f"{type(node).__name__} is not allowed in a formula")
    if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)) \
            or isinstance(node, ast.Constant) and isinstance(node.value, bool):
        raise FormulaError(f"only numbers may appear as constants, not {node.value!r}")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise FormulaError(f"only {', '.join(FUNCTIONS)} may be called")
        if node.keywords:
            raise FormulaError("functions take no keyword arguments")
        low, high = ARITY[node.func.id]
        if not low <= len(node.args) <= high:
            wanted = f"{low}" if low == high else f"at least {low}"
            raise FormulaError(f"{node.func.id}() takes {wanted} argument{'s' * (low != 1)}, "
                               f"not {len(node.args)}")
    if isinstance(node, ast.Attribute):
        _dotted(node)  # raises unless it is a plain dotted name
    if isinstance(node, ast.Name) and node.id.startswith("_"):
        raise FormulaError(f"name {node.id!r} is not allowed")


def _dotted(node):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and not node.attr.startswith("_"):
        return f"{_dotted(node.value)}.{node.attr}"
    raise FormulaError("only plain dotted names (observation keys) may be used")


def names_in(formula):
    """The names a formula reads (functions excluded), dotted names whole."""
    found = set()

    def visit(node):
        if isinstance(node, (ast.Name, ast.Attribute)):
            found.add(_dotted(node))
            return
        children = node.args if isinstance(node, ast.Call) else ast.iter_child_nodes(node)
        for child in children:
            visit(child)

    visit(parse(formula).body)
    return found


def evaluate(formula, names):
    """The value of ``formula`` with ``names`` (a mapping); raises MissingName or FormulaError."""
    return _eval(parse(formula).body, names)


def _eval(node, names):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = _dotted(node)
        if name not in names or names[name] is None:
            raise MissingName(name)
        value = names[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MissingName(f"{name} (its value {value!r} is not a number)")
        return value
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, names), _eval(node.right, names)
        try:
            return _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise FormulaError("division by zero") from None
        except (ArithmeticError, TypeError, ValueError) as exc:
            raise FormulaError(f"{left!r} {type(node.op).__name__} {right!r} fails: {exc}") from None
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, names)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Compare):
        left = _eval(node.left, names)
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, names)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.List):  # a list-valued key: "[msg_default, msgsize_default]"
        return [_eval(item, names) for item in node.elts]
    if isinstance(node, ast.IfExp):
        return _eval(node.body if _eval(node.test, names) else node.orelse, names)
    if isinstance(node, ast.Call):
        arguments = [_eval(arg, names) for arg in node.args]
        try:
            return FUNCTIONS[node.func.id](*arguments)
        except (ArithmeticError, TypeError, ValueError) as exc:
            raise FormulaError(f"{node.func.id}({', '.join(map(repr, arguments))}) fails: {exc}") from None
    raise FormulaError(f"{type(node).__name__} is not allowed in a formula")


def kind_of(entry):
    """Which rule an expectation entry uses (exactly one must be present)."""
    kinds = [kind for kind in RULE_KINDS if kind in entry]
    return kinds[0] if len(kinds) == 1 else None


def validate(entry):
    """Problems with an entry's rule, as (field, message) pairs; empty when it is sound."""
    kinds = [kind for kind in RULE_KINDS if kind in entry]
    if len(kinds) != 1:
        return [("expect", f"give exactly one of {', '.join(RULE_KINDS)} (found {kinds or 'none'})")]
    kind, rule = kinds[0], entry[kinds[0]]
    if kind == "one_of" and (not isinstance(rule, list) or not rule):
        return [(kind, "one_of takes a non-empty list of values")]
    if kind == "range":
        if not (isinstance(rule, list) and len(rule) == 2
                and all(_is_number(x) or isinstance(x, str) for x in rule)):
            return [(kind, "range takes [low, high]: two numbers or formulas")]
        if all(_is_number(x) for x in rule) and rule[0] > rule[1]:
            return [(kind, "range takes [low, high] with low <= high")]
        for bound in rule:
            if isinstance(bound, str):
                try:
                    parse(bound)
                except FormulaError as exc:
                    return [(kind, str(exc))]
    if kind in ("formula", "at_least", "at_most"):
        try:
            parse(rule)
        except FormulaError as exc:
            return [(kind, str(exc))]
    if kind == "expect_error" and not (isinstance(rule, str) and rule.strip()):
        return [(kind, "expect_error takes the text the probe's error must contain")]
    if kind == "expect_null" and rule is not True:
        return [(kind, "expect_null takes true (the value must be JSON null)")]
    if kind == "expect" and isinstance(rule, dict):
        return [(kind, "expect takes a value, not a table; use one_of for several acceptable values")]
    return []


def judge(entry, value, names):
    """Compare an observed value with an entry's rule.

    Returns ``(matched, expected_text)``; ``expected_text`` is what the report shows as
    the expected value, with the formula worked out (``"max_dgram_qlen + 1 = 11"``).
    Raises MissingName when a formula cannot be worked out for this run.
    """
    kind = kind_of(entry)
    rule = entry[kind]
    if kind == "expect":
        return _same(value, rule), rule
    if kind == "expect_null":
        return value is None, None
    if kind == "expect_error":
        return False, expected_error(entry)
    if kind == "one_of":
        return any(_same(value, option) for option in rule), rule
    if kind == "range":
        low, high = (evaluate(b, names) if isinstance(b, str) else b for b in rule)
        ok = _is_number(value) and low <= value <= high
        return ok, f"{low}..{high}"
    target = evaluate(rule, names)
    if kind == "formula":
        return _same(value, target), target
    ok = _is_number(value) and (value >= target if kind == "at_least" else value <= target)
    return ok, f"{'>=' if kind == 'at_least' else '<='} {target}"


def expected_error(entry):
    """What a report shows as expected for an ``expect_error`` rule."""
    return f"an error saying {as_json(entry['expect_error'])}"


def error_expected(entry, message):
    """Whether ``entry`` expects the probe's error ``message`` (an ``expect_error`` rule)."""
    wanted = entry.get("expect_error") if kind_of(entry) == "expect_error" else None
    return isinstance(wanted, str) and wanted in str(message)


def describe(entry):
    """The rule as people read it, values as JSON: ``formula: "max_dgram_qlen + 1"``,
    ``expect: true``, ``one_of: ["EAGAIN", "ENOBUFS"]``."""
    kind = kind_of(entry)
    return "expect: null" if kind == "expect_null" else f"{kind}: {as_json(entry[kind])}"


def as_json(value):
    """A value as JSON text, the form every value takes in what the kit prints."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def formulas_of(entry):
    """The formulas an entry's rule evaluates (a formula rule, a bound, range bounds)."""
    kind = kind_of(entry)
    if kind in ("formula", "at_least", "at_most"):
        return [entry[kind]]
    if kind == "range" and isinstance(entry[kind], list):
        return [bound for bound in entry[kind] if isinstance(bound, str)]
    return []


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(value, expected):
    # true must not equal 1, as it would in Python.
    if isinstance(value, bool) or isinstance(expected, bool):
        return type(value) is type(expected) and value == expected
    if _is_number(value) and _is_number(expected):
        return value == expected
    return value == expected

"""The small part of KQL the bot sends to Log Analytics, with Kusto's own name and type rules.

A real tokenizer and a recursive-descent parser for::

    <Table>
    | where <predicate>                      (==, !=, =~, !~, <, <=, >, >=, and, or, not(),
                                              tobool(), tostring(), tolower(), toupper())
    | summarize [name =] <aggregate>, ...    (count(), countif(), sum(), sumif(), avg(), min(),
                                              max(), percentile(), percentilew())

evaluated over rows of a :class:`Schema` (column name -> Kusto type). What Kusto refuses, this
refuses with the same error: an unknown table or column (``SEM0100``, "Failed to resolve ...
named 'X'", prefixed by the operator it is in), and a comparison of two types that do not
compare (``SEM0064``, "Cannot compare values of types string and bool. Try adding explicit
casts"), which is why the classic ``requests`` table's string ``success`` needs ``tobool()``.
Anything this module does not implement raises :class:`NotImplementedInDouble`, never a silent
answer: the double then says so instead of pretending to be Azure.

Result columns are named as the query names them (``total = sum(ItemCount)``), else as Kusto
derives them (``sum_ItemCount``, ``count_``, ``percentile_DurationMs_95``). Without ``by``,
``summarize`` over no rows gives one row of the aggregations' defaults (0 for count/sum,
null for the others), as Kusto documents.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["KqlError", "NotImplementedInDouble", "Result", "Schema", "run_query", "tokenize"]

Row = Mapping[str, Any]
SEM_UNRESOLVED = "SEM0100"  # Kusto's code for an unresolved table/column (seen in Azure's answers)
# Kusto's code for "Cannot compare values of types ..." as published troubleshooting tables
# give it (not in Microsoft's reference): medium confidence.
SEM_COMPARE = "SEM0064"
# The double's stand-in code for Kusto's other semantic errors (wrong argument types or counts):
# not verified against Azure, so tests match on the message, not on this code.
SEM_OTHER = "SEM0219"
NUMERIC = {"int", "long", "real", "decimal"}


@dataclass(frozen=True)
class Schema:
    """A table: its name and its columns' Kusto types, in order."""

    name: str
    columns: tuple[tuple[str, str], ...]

    def type_of(self, column: str) -> str | None:
        return dict(self.columns).get(column)


@dataclass(frozen=True)
class Result:
    """One table of the answer: ``(name, type)`` columns and the rows."""

    columns: list[tuple[str, str]]
    rows: list[list[Any]]


class KqlError(Exception):
    """A query Kusto refuses: ``code`` is the innermost code (``SEM0100``), ``message`` its
    text; ``kind`` the middle error (``SemanticError`` or ``SyntaxError``)."""

    def __init__(self, code: str, message: str, kind: str = "SemanticError") -> None:
        super().__init__(message)
        self.code, self.message, self.kind = code, message, kind


class NotImplementedInDouble(Exception):
    """Valid KQL, perhaps, but beyond what this double evaluates."""


# -- tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # name | string | number | op | end
    text: str
    value: Any = None
    at: int = 0


_OPERATORS = ("==", "!=", "=~", "!~", "<=", ">=", "|", "(", ")", ",", "=", "<", ">", "-")


def tokenize(text: str) -> list[Token]:
    """KQL tokens: names, string literals ("..." and '...' with backslash escapes, @"..."
    verbatim), numbers, operators; ``//`` comments and whitespace are skipped."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif c in "\"'" or (c == "@" and i + 1 < n and text[i + 1] in "\"'"):
            verbatim = c == "@"
            quote = text[i + 1] if verbatim else c
            j, chars = i + (2 if verbatim else 1), []
            while True:
                if j >= n:
                    raise KqlError("SYN0002", f"unterminated string literal at {i}",
                                   "SyntaxError")
                ch = text[j]
                if ch == quote:
                    if verbatim and j + 1 < n and text[j + 1] == quote:
                        chars.append(quote)
                        j += 2
                        continue
                    break
                if ch == "\\" and not verbatim and j + 1 < n:
                    nxt = text[j + 1]
                    chars.append({"n": "\n", "t": "\t", "r": "\r"}.get(nxt, nxt))
                    j += 2
                    continue
                chars.append(ch)
                j += 1
            tokens.append(Token("string", text[i:j + 1], "".join(chars), i))
            i = j + 1
        elif c.isdigit():
            match = re.compile(r"\d+(\.\d+)?([eE][+-]?\d+)?").match(text, i)
            assert match is not None
            literal = match.group(0)
            number: int | float = float(literal) if any(x in literal for x in ".eE") \
                else int(literal)
            tokens.append(Token("number", literal, number, i))
            i = match.end()
        elif c.isalpha() or c == "_":
            match = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(text, i)
            assert match is not None
            tokens.append(Token("name", match.group(0), match.group(0), i))
            i = match.end()
        else:
            for op in _OPERATORS:
                if text.startswith(op, i):
                    tokens.append(Token("op", op, op, i))
                    i += len(op)
                    break
            else:
                raise KqlError("SYN0002", f"Query could not be parsed at '{c}' on line "
                               f"[{text.count(chr(10), 0, i) + 1}]", "SyntaxError")
    tokens.append(Token("end", "", None, n))
    return tokens


# -- expressions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Expr:
    """A scalar expression: ``kind`` is literal | column | call | binary | not."""

    kind: str
    value: Any = None
    args: tuple[Expr, ...] = ()
    type: str = ""


@dataclass(frozen=True)
class Aggregate:
    name: str
    function: str
    args: tuple[Expr, ...]
    type: str


_COMPARISONS = {"==", "!=", "=~", "!~", "<", "<=", ">", ">="}
_SCALARS: dict[str, Callable[[list[Any]], Any]] = {
    "tobool": lambda a: _tobool(a[0]),
    "tostring": lambda a: "" if a[0] is None else _kusto_str(a[0]),
    "tolower": lambda a: None if a[0] is None else str(a[0]).lower(),
    "toupper": lambda a: None if a[0] is None else str(a[0]).upper(),
}
_SCALAR_TYPES = {"tobool": "bool", "tostring": "string", "tolower": "string",
                 "toupper": "string"}
_AGGREGATES = {"count", "countif", "sum", "sumif", "avg", "min", "max", "percentile",
               "percentilew"}


class _Parser:
    def __init__(self, tokens: list[Token], schema_for: Callable[[str], Schema | None]) -> None:
        self.tokens, self.pos = tokens, 0
        self.schema_for = schema_for
        self.schema: Schema | None = None
        self.operator = ""  # the operator being parsed, for Kusto's message prefix

    # -- token helpers

    @property
    def peek(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def accept(self, text: str) -> bool:
        token = self.peek
        if token.kind in ("op", "name") and token.text == text:
            self.pos += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            token = self.peek
            raise KqlError("SYN0002", f"Query could not be parsed at '{token.text or 'end'}'"
                           f": expected '{text}'", "SyntaxError")

    def prefix(self) -> str:
        return f"'{self.operator}' operator: " if self.operator else ""

    # -- the query

    def query(self) -> tuple[Schema, list[tuple[str, Any]]]:
        first = self.take()
        if first.kind != "name":
            raise KqlError("SYN0002", f"Query could not be parsed at '{first.text}'",
                           "SyntaxError")
        stages: list[tuple[str, Any]] = []
        schema = self.schema_for(first.text)
        if self.peek.kind == "op" and self.peek.text == "|" and \
                self.tokens[self.pos + 1].kind == "name":
            self.operator = self.tokens[self.pos + 1].text
        if schema is None:
            # Kusto names the table in the first operator's message, as an unresolved name.
            raise KqlError(SEM_UNRESOLVED, f"{self.prefix()}Failed to resolve table or column "
                           f"expression named '{first.text}'")
        self.schema = schema
        while self.accept("|"):
            word = self.take()
            self.operator = word.text
            if word.text == "where":
                predicate = self.expression()
                if predicate.type not in ("bool", ""):
                    raise KqlError(SEM_OTHER, f"{self.prefix()}The predicate must be of type "
                                   f"bool, not {predicate.type}")
                stages.append(("where", predicate))
            elif word.text == "summarize":
                stages.append(("summarize", self.summarize()))
            else:
                raise NotImplementedInDouble(f"the '{word.text}' operator")
        if self.peek.kind != "end":
            raise KqlError("SYN0002", f"Query could not be parsed at '{self.peek.text}'",
                           "SyntaxError")
        return schema, stages

    def summarize(self) -> list[Aggregate]:
        aggregates: list[Aggregate] = []
        while True:
            name = None
            if self.peek.kind == "name" and self.tokens[self.pos + 1].text == "=" and \
                    self.tokens[self.pos + 1].kind == "op":
                name = self.take().text
                self.take()
            function = self.take()
            if function.kind != "name" or function.text not in _AGGREGATES:
                if function.kind == "name" and self.peek.text == "(":
                    raise NotImplementedInDouble(f"the aggregation {function.text}()")
                raise KqlError(SEM_UNRESOLVED, f"{self.prefix()}summarize expression must be an "
                               f"aggregation, not '{function.text}'")
            self.expect("(")
            args: list[Expr] = []
            if not self.accept(")"):
                args.append(self.expression())
                while self.accept(","):
                    args.append(self.expression())
                self.expect(")")
            aggregates.append(self.aggregate(name, function.text, tuple(args)))
            if self.accept("by"):
                raise NotImplementedInDouble("summarize ... by")
            if not self.accept(","):
                return aggregates

    def aggregate(self, name: str | None, function: str, args: tuple[Expr, ...]) -> Aggregate:
        arity = {"count": 0, "countif": 1, "sum": 1, "sumif": 2, "avg": 1, "min": 1, "max": 1,
                 "percentile": 2, "percentilew": 3}[function]
        if len(args) != arity:
            raise KqlError(SEM_OTHER, f"{self.prefix()}function '{function}': expected "
                           f"{arity} argument(s), got {len(args)}")
        def numeric(index: int) -> None:
            if args[index].type not in NUMERIC:
                raise KqlError(SEM_OTHER, f"{self.prefix()}{function}(): argument "
                               f"#{index + 1} expected to be a numeric expression, got "
                               f"{args[index].type}")
        def boolean(index: int) -> None:
            if args[index].type != "bool":
                raise KqlError(SEM_OTHER, f"{self.prefix()}{function}(): argument "
                               f"#{index + 1} expected to be a bool expression, got "
                               f"{args[index].type}")
        if function in ("sum", "avg", "sumif", "percentile", "percentilew"):
            numeric(0)
        if function == "percentilew":
            numeric(1)
            numeric(2)
        if function == "percentile":
            numeric(1)
        if function == "sumif":
            boolean(1)
        if function == "countif":
            boolean(0)
        column = args[0].value if args and args[0].kind == "column" else None
        default = {"count": "count_", "countif": "countif_"}.get(function) or (
            f"percentile_{column}_{_kusto_str(args[-1].value)}"
            if function.startswith("percentile") and column else
            f"{function}_{column}" if column else f"{function}_")
        if function in ("count", "countif"):
            kind = "long"
        elif function in ("sum", "sumif"):
            kind = "long" if args[0].type in ("int", "long") else "real"
        elif function == "avg":
            kind = "real"
        else:
            kind = args[0].type
        return Aggregate(name or default, function, args, kind)

    # -- scalar expressions (or < and < comparison < unary)

    def expression(self) -> Expr:
        left = self.conjunction()
        while self.accept("or"):
            left = self.logical("or", left, self.conjunction())
        return left

    def conjunction(self) -> Expr:
        left = self.comparison()
        while self.accept("and"):
            left = self.logical("and", left, self.comparison())
        return left

    def logical(self, op: str, left: Expr, right: Expr) -> Expr:
        for side in (left, right):
            if side.type != "bool":
                raise KqlError(SEM_OTHER, f"{self.prefix()}The operator '{op}' needs bool "
                               f"operands, not {side.type}")
        return Expr("binary", op, (left, right), "bool")

    def comparison(self) -> Expr:
        left = self.unary()
        token = self.peek
        if token.kind == "op" and token.text in _COMPARISONS:
            self.take()
            right = self.unary()
            self.check_comparable(token.text, left, right)
            return Expr("binary", token.text, (left, right), "bool")
        return left

    def check_comparable(self, op: str, left: Expr, right: Expr) -> None:
        a, b = left.type, right.type
        if op in ("=~", "!~"):
            ok = a == b == "string"
        elif op in ("==", "!="):
            ok = a == b or (a in NUMERIC and b in NUMERIC)
        else:
            ok = (a in NUMERIC and b in NUMERIC) or a == b == "datetime"
        if not ok:
            raise KqlError(SEM_COMPARE, f"{self.prefix()}Cannot compare values of types {a} "
                           f"and {b}. Try adding explicit casts")

    def unary(self) -> Expr:
        token = self.take()
        if token.kind == "string":
            return Expr("literal", token.value, type="string")
        if token.kind == "number":
            return Expr("literal", token.value,
                        type="real" if isinstance(token.value, float) else "long")
        if token.kind == "op" and token.text == "-" and self.peek.kind == "number":
            number = self.take().value
            return Expr("literal", -number, type="real" if isinstance(number, float) else "long")
        if token.kind == "op" and token.text == "(":
            inner = self.expression()
            self.expect(")")
            return inner
        if token.kind == "name":
            if token.text in ("true", "false") and self.peek.text != "(":
                return Expr("literal", token.text == "true", type="bool")
            if self.peek.kind == "op" and self.peek.text == "(":
                return self.call(token.text)
            schema = self.schema
            column_type = schema.type_of(token.text) if schema else None
            if column_type is None:
                raise KqlError(SEM_UNRESOLVED, f"{self.prefix()}Failed to resolve column or scalar "
                               f"expression named '{token.text}'")
            return Expr("column", token.text, type=column_type)
        raise KqlError("SYN0002", f"Query could not be parsed at '{token.text or 'end'}'",
                       "SyntaxError")

    def call(self, function: str) -> Expr:
        self.expect("(")
        args: list[Expr] = []
        if not self.accept(")"):
            args.append(self.expression())
            while self.accept(","):
                args.append(self.expression())
            self.expect(")")
        if function == "not":
            if len(args) != 1 or args[0].type != "bool":
                raise KqlError(SEM_OTHER, f"{self.prefix()}not(): expected one bool argument")
            return Expr("not", None, tuple(args), "bool")
        if function in _AGGREGATES:
            raise KqlError(SEM_OTHER, f"{self.prefix()}Function '{function}' cannot be "
                           "invoked in current context")
        if function not in _SCALARS:
            raise NotImplementedInDouble(f"the function {function}()")
        if len(args) != 1:
            raise KqlError(SEM_OTHER, f"{self.prefix()}function '{function}': expected 1 "
                           f"argument, got {len(args)}")
        return Expr("call", function, tuple(args), _SCALAR_TYPES[function])


# -- evaluation -----------------------------------------------------------------------------


def _tobool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    text = str(value).strip().lower()
    return {"true": True, "false": False, "1": True, "0": False}.get(text)


def _kusto_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def _eval(expr: Expr, row: Row) -> Any:
    if expr.kind == "literal":
        return expr.value
    if expr.kind == "column":
        return row.get(expr.value)
    if expr.kind == "call":
        return _SCALARS[expr.value]([_eval(arg, row) for arg in expr.args])
    if expr.kind == "not":
        inner = _eval(expr.args[0], row)
        return None if inner is None else not inner
    left, right = (_eval(arg, row) for arg in expr.args)
    op = expr.value
    if op == "and":
        return bool(left) and bool(right)
    if op == "or":
        return bool(left) or bool(right)
    if left is None or right is None:
        return False  # Kusto: a comparison with null is not true
    if op in ("=~", "!~"):
        same = str(left).lower() == str(right).lower()
        return same if op == "=~" else not same
    comparisons: dict[str, Callable[[Any, Any], bool]] = {
        "==": lambda a, b: bool(a == b), "!=": lambda a, b: bool(a != b),
        "<": lambda a, b: bool(a < b), "<=": lambda a, b: bool(a <= b),
        ">": lambda a, b: bool(a > b), ">=": lambda a, b: bool(a >= b)}
    return comparisons[op](left, right)


def _aggregate(agg: Aggregate, rows: Sequence[Row]) -> Any:
    f, args = agg.function, agg.args
    if f == "count":
        return len(rows)
    if f == "countif":
        return sum(1 for row in rows if _eval(args[0], row) is True)
    if f in ("sum", "sumif"):
        chosen = rows if f == "sum" else [r for r in rows if _eval(args[1], r) is True]
        values = [v for v in (_eval(args[0], r) for r in chosen) if v is not None]
        return sum(values) if values else 0
    values = [v for v in (_eval(args[0], r) for r in rows) if v is not None]
    if f == "avg":
        return sum(values) / len(values) if values else None
    if f == "min":
        return min(values) if values else None
    if f == "max":
        return max(values) if values else None
    # percentile(x, p) / percentilew(x, weight, p): nearest rank over the (weighted) values.
    weighted: list[tuple[float, float]] = []
    for row in rows:
        value = _eval(args[0], row)
        weight = _eval(args[1], row) if f == "percentilew" else 1
        if value is None or weight is None or weight <= 0:
            continue
        weighted.append((float(value), float(weight)))
    if not weighted:
        return None
    p = float(_eval(args[-1], {}))
    weighted.sort()
    total = sum(w for _, w in weighted)
    target = max(p / 100 * total, min(w for _, w in weighted) * 1e-9)
    running = 0.0
    for value, weight in weighted:
        running += weight
        if running >= target - 1e-9:
            return value
    return weighted[-1][0]


def run_query(text: str, schema_for: Callable[[str], Schema | None],
              rows_for: Callable[[Schema], Iterable[Row]]) -> Result:
    """Parse ``text``, check its names and types against ``schema_for(table)`` (None: no such
    table) and evaluate it over ``rows_for(schema)`` (dicts keyed by the schema's columns)."""
    schema, stages = _Parser(tokenize(text), schema_for).query()
    rows: list[Row] = list(rows_for(schema))
    columns: list[tuple[str, str]] = list(schema.columns)
    for kind, stage in stages:
        if kind == "where":
            rows = [row for row in rows if _eval(stage, row) is True]
        else:
            aggregates: list[Aggregate] = stage
            result = {agg.name: _aggregate(agg, rows) for agg in aggregates}
            columns = [(agg.name, agg.type) for agg in aggregates]
            rows = [result]
    out = []
    for row in rows:
        values = []
        for name, kind in columns:
            value = row.get(name)
            if isinstance(value, float) and math.isnan(value):
                value = None
            if isinstance(value, datetime):
                value = _kusto_str(value)
            if kind in ("int", "long") and isinstance(value, float) and value.is_integer():
                value = int(value)
            values.append(value)
        out.append(values)
    return Result(columns, out)

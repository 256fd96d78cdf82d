"""Expressions in experiment profiles (``${{ ... }}``): a small language, parsed here, never eval'd.

A profile can compute option values and log messages and decide ``if``,
``while`` and ``when`` from what the jobs publish (the reference's §9
syntax): numbers, bare words as text, ``+ - * / **``, comparisons,
``and``/``or``/``not``, parentheses, the functions ``random()``, ``unit()``,
``hours_elapsed()``, ``experiment()`` and ``job_name()``, and MQTT lookups
``unit:job:setting[.key]`` or ``::job:setting`` (the unit the action runs on).

Profiles come from users over the API, so the text is tokenized and parsed
by hand into a small tree (no eval, no Python ast), the tree's size and depth
are bounded, and every number stays a finite float: evaluating a profile's
expression costs a few microseconds whatever it says. Syntax errors name the
column, so the profile's 400 can name line, field and column.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from attrs import frozen

MAX_LENGTH = 500  # characters inside one ${{ ... }}
MAX_DEPTH = 32  # nesting of parentheses, not/-, and of the tree itself
MAX_EXPONENT = 1000.0  # |b| in a ** b
FUNCTIONS = ("random", "unit", "hours_elapsed", "experiment", "job_name")
BRACKETED = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
WHOLE = re.compile(r"\s*\$\{\{(.*)\}\}\s*", re.DOTALL)

Value = float | bool | str


class ExpressionSyntaxError(ValueError):
    """Text that is not an expression; ``column`` is 1-based within the expression."""

    def __init__(self, message: str, column: int) -> None:
        self.column = column
        super().__init__(f"column {column}: {message}")


class EvaluationError(ValueError):
    """An expression that cannot be computed now (a type mismatch, a division by zero, ...)."""


class MissingValue(EvaluationError):
    """An MQTT lookup whose topic has no value (yet)."""


@frozen
class Context:
    """What an expression can see when it runs: where it runs, and the latest MQTT payloads."""

    unit: str
    job: str
    experiment: str
    hours_elapsed: float
    random: Callable[[], float]
    lookup: Callable[[str, str, str], bytes | None]  # (unit, job, setting) -> the latest payload


def coerce(value: Any) -> Value:
    """The reference's rule: numbers are floats, numeric text becomes a float, "true"/"false" bools."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        try:
            return _finite(float(value))
        except OverflowError:  # an integer too large for a float
            raise EvaluationError("the value is not a finite number") from None
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        try:
            number = float(text)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    if value is None:
        raise EvaluationError("the value is null")
    raise EvaluationError(f"the value {json.dumps(value)[:80]} is not a number, text or true/false")


def text_of(value: Value) -> str:
    """A value as a log message shows it: 400.0 as 400, True as true."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _finite(number: float) -> float:
    if not math.isfinite(number):
        raise EvaluationError("the result is not a finite number")
    return number


def _type_name(value: Value) -> str:
    return "true/false" if isinstance(value, bool) else "a number" if isinstance(value, float) else f"the text {value!r}"


def _number(value: Value, op: str) -> float:
    if isinstance(value, bool) or not isinstance(value, float):
        raise EvaluationError(f"{op} takes numbers, not {_type_name(value)}")
    return value


def _boolean(value: Value, op: str) -> bool:
    if not isinstance(value, bool):
        raise EvaluationError(f"{op} takes true/false, not {_type_name(value)}")
    return value


# --- the tree -----------------------------------------------------------------------------


@frozen
class Literal:
    value: Value
    depth: int = 1

    def evaluate(self, context: Context) -> Value:
        return self.value


@frozen
class Lookup:
    unit: str | None  # None: the unit the action runs on
    job: str
    setting: str
    keys: tuple[str, ...]
    depth: int = 1

    def evaluate(self, context: Context) -> Value:
        unit = self.unit or context.unit
        name = f"{unit}:{self.job}:{self.setting}"
        payload = context.lookup(unit, self.job, self.setting)
        if not payload:
            raise MissingValue(f"{name} has no value yet")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise EvaluationError(f"{name} is not text") from None
        if not self.keys:
            return coerce(text)
        try:
            value: Any = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: a payload nested deeper than Python's stack
            raise EvaluationError(f"{name} is not JSON, so .{'.'.join(self.keys)} cannot index it") from None
        for key in self.keys:
            if not isinstance(value, dict) or key not in value:
                raise MissingValue(f"{name} has no key {key!r}")
            value = value[key]
        return coerce(value)


@frozen
class Call:
    name: str
    depth: int = 1

    def evaluate(self, context: Context) -> Value:
        if self.name == "random":
            return context.random()
        if self.name == "hours_elapsed":
            return float(context.hours_elapsed)
        return {"unit": context.unit, "experiment": context.experiment, "job_name": context.job}[self.name]


@frozen
class Unary:
    op: str
    operand: Node
    depth: int

    def evaluate(self, context: Context) -> Value:
        value = self.operand.evaluate(context)
        if self.op == "not":
            return not _boolean(value, "not")
        return -_number(value, "-")


@frozen
class Binary:
    op: str
    left: Node
    right: Node
    depth: int

    def evaluate(self, context: Context) -> Value:
        left = self.left.evaluate(context)
        if self.op in ("and", "or"):  # short-circuit, as a lab expects of `x and pio1:...`
            if _boolean(left, self.op) is (self.op == "or"):
                return left
            return _boolean(self.right.evaluate(context), self.op)
        right = self.right.evaluate(context)
        if self.op == "==":
            return left == right and isinstance(left, bool) == isinstance(right, bool)
        if self.op == "!=":
            return not (left == right and isinstance(left, bool) == isinstance(right, bool))
        if self.op in ("<", "<=", ">", ">="):
            return _ordered(self.op, left, right)
        a, b = _number(left, self.op), _number(right, self.op)
        if self.op == "+":
            return _finite(a + b)
        if self.op == "-":
            return _finite(a - b)
        if self.op == "*":
            return _finite(a * b)
        if self.op == "/":
            if b == 0:
                raise EvaluationError("division by zero")
            return _finite(a / b)
        return _power(a, b)


Node = Literal | Lookup | Call | Unary | Binary


def _ordered(op: str, left: Value, right: Value) -> bool:
    both_text = isinstance(left, str) and isinstance(right, str)
    if not both_text:
        left, right = _number(left, op), _number(right, op)
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]  # type: ignore[operator]


def _power(base: float, exponent: float) -> float:
    if abs(exponent) > MAX_EXPONENT:
        raise EvaluationError(f"an exponent is at most {MAX_EXPONENT:g} in size")
    if base < 0 and not exponent.is_integer():
        raise EvaluationError("a negative number to a fractional power is not a real number")
    if base == 0 and exponent < 0:
        raise EvaluationError("division by zero")
    try:
        return _finite(base**exponent)
    except OverflowError:
        raise EvaluationError("the result is not a finite number") from None


# --- tokens and the parser -------------------------------------------------------------------

NAME = r"[A-Za-z_$][A-Za-z0-9_]*"
TOKEN = re.compile(
    rf"(?P<lookup>(?:(?P<unit>[A-Za-z0-9_][A-Za-z0-9_-]*)|(?P<here>:)):(?P<job>{NAME}):(?P<setting>{NAME})(?P<keys>(?:\.[A-Za-z0-9_]+)*))"
    r"|(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>\*\*|==|!=|<=|>=|[<>+\-*/()])"
)
KEYWORDS = ("and", "or", "not", "true", "false")
COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")


@frozen
class Token:
    kind: str  # lookup, number, word, keyword, op, end
    text: str
    column: int
    match: re.Match[str] | None = None


def _tokens(text: str) -> list[Token]:
    found, i = [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        match = TOKEN.match(text, i)
        if match is None:
            hint = " (text is written bare, without quotes)" if text[i] in "'\"" else ""
            raise ExpressionSyntaxError(f"unexpected character {text[i]!r}{hint}", i + 1)
        kind = match.lastgroup if match.lastgroup in ("number", "word", "op") else "lookup"
        if kind == "word" and match.group().lower() in KEYWORDS:
            kind = "keyword"
        found.append(Token(kind, match.group(), i + 1, match))
        i = match.end()
    found.append(Token("end", "", len(text) + 1))
    return found


class _Parser:
    """Recursive descent, lowest precedence first: or, and, not, comparison, + -, * /, unary -, **."""

    def __init__(self, text: str, inputs: Mapping[str, Value]) -> None:
        self.tokens = _tokens(text)
        self.at = 0
        self.nesting = 0
        self.inputs = inputs

    @property
    def token(self) -> Token:
        return self.tokens[self.at]

    def take(self, kind: str, *texts: str) -> Token | None:
        token = self.token
        if token.kind == kind and (not texts or token.text.lower() in texts):
            self.at += 1
            return token
        return None

    def fail(self, what: str) -> ExpressionSyntaxError:
        token = self.token
        got = "the end of the expression" if token.kind == "end" else repr(token.text)
        return ExpressionSyntaxError(f"expected {what}, found {got}", token.column)

    def nest(self, column: int) -> None:
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise ExpressionSyntaxError(f"the expression nests more than {MAX_DEPTH} deep", column)

    def node(self, kind: type, column: int, *parts: Any) -> Node:
        depth = 1 + max(part.depth for part in parts[1:])
        if depth > MAX_DEPTH:
            raise ExpressionSyntaxError(f"the expression nests more than {MAX_DEPTH} deep", column)
        return kind(*parts, depth)  # type: ignore[no-any-return]

    def parse(self) -> Node:
        if self.token.kind == "end":
            raise ExpressionSyntaxError("the expression is empty", 1)
        tree = self.either()
        if self.token.kind != "end":
            raise self.fail("an operator or the end")
        return tree

    def either(self) -> Node:
        tree = self.both()
        while token := self.take("keyword", "or"):
            tree = self.node(Binary, token.column, "or", tree, self.both())
        return tree

    def both(self) -> Node:
        tree = self.negation()
        while token := self.take("keyword", "and"):
            tree = self.node(Binary, token.column, "and", tree, self.negation())
        return tree

    def negation(self) -> Node:
        token = self.take("keyword", "not")
        if token is None:
            return self.comparison()
        self.nest(token.column)
        tree = self.node(Unary, token.column, "not", self.negation())
        self.nesting -= 1
        return tree

    def comparison(self) -> Node:
        tree = self.sum()
        if token := self.take("op", *COMPARISONS):
            tree = self.node(Binary, token.column, token.text, tree, self.sum())
            if self.token.text in COMPARISONS:
                raise ExpressionSyntaxError("comparisons do not chain; join them with and", self.token.column)
        return tree

    def sum(self) -> Node:
        tree = self.product()
        while token := self.take("op", "+", "-"):
            tree = self.node(Binary, token.column, token.text, tree, self.product())
        return tree

    def product(self) -> Node:
        tree = self.sign()
        while token := self.take("op", "*", "/"):
            tree = self.node(Binary, token.column, token.text, tree, self.sign())
        return tree

    def sign(self) -> Node:
        token = self.take("op", "-")
        if token is None:
            return self.power()
        self.nest(token.column)
        tree = self.node(Unary, token.column, "-", self.sign())
        self.nesting -= 1
        return tree

    def power(self) -> Node:
        tree = self.atom()
        if token := self.take("op", "**"):
            self.nest(token.column)
            tree = self.node(Binary, token.column, "**", tree, self.sign())  # right-associative; 2**-1 works
            self.nesting -= 1
        return tree

    def atom(self) -> Node:
        token = self.token
        if self.take("op", "("):
            self.nest(token.column)
            tree = self.either()
            if not self.take("op", ")"):
                raise self.fail("')'")
            self.nesting -= 1
            return tree
        if self.take("number"):
            number = float(token.text)
            if not math.isfinite(number):
                raise ExpressionSyntaxError(f"{token.text} is too large a number", token.column)
            return Literal(number)
        if self.take("keyword", "true", "false"):
            return Literal(token.text.lower() == "true")
        if self.take("lookup"):
            assert token.match is not None
            keys = token.match.group("keys")
            return Lookup(
                None if token.match.group("here") else token.match.group("unit"),
                token.match.group("job"),
                token.match.group("setting"),
                tuple(keys[1:].split(".")) if keys else (),
            )
        if self.take("word"):
            if self.take("op", "("):
                if token.text not in FUNCTIONS:
                    raise ExpressionSyntaxError(f"unknown function {token.text}(); one of {', '.join(f + '()' for f in FUNCTIONS)}", token.column)
                if not self.take("op", ")"):
                    raise self.fail(f"')' ({token.text}() takes no arguments)")
                return Call(token.text)
            return Literal(self.inputs.get(token.text, token.text))
        raise self.fail("a number, a word, a lookup (unit:job:setting), a function or '('")


@frozen
class Expression:
    """One parsed ``${{ ... }}``; ``source`` is the text inside the brackets."""

    source: str
    tree: Node

    def evaluate(self, context: Context) -> Value:
        return self.tree.evaluate(context)

    def lookups(self) -> list[Lookup]:
        found, todo = [], [self.tree]
        while todo:
            node = todo.pop()
            if isinstance(node, Lookup):
                found.append(node)
            elif isinstance(node, Unary):
                todo.append(node.operand)
            elif isinstance(node, Binary):
                todo.extend((node.left, node.right))
        return found

    def __repr__(self) -> str:
        return f"${{{{{self.source}}}}}"


@frozen
class Template:
    """Text with expressions in it (a log message, an option): the pieces, text and expressions in turn."""

    parts: tuple[str | Expression, ...]

    def evaluate(self, context: Context) -> str:
        return "".join(part if isinstance(part, str) else text_of(part.evaluate(context)) for part in self.parts)

    def lookups(self) -> list[Lookup]:
        return [lookup for part in self.parts if isinstance(part, Expression) for lookup in part.lookups()]

    def __repr__(self) -> str:
        return "".join(part if isinstance(part, str) else repr(part) for part in self.parts)


def parse_expression(text: str, inputs: Mapping[str, Value] | None = None) -> Expression:
    """``text`` (without the brackets) parsed; bare words naming an input take its value."""
    if len(text) > MAX_LENGTH:
        raise ExpressionSyntaxError(f"an expression is at most {MAX_LENGTH} characters", MAX_LENGTH + 1)
    return Expression(text.strip(), _Parser(text, inputs or {}).parse())


def parse_value(text: str, inputs: Mapping[str, Value] | None = None) -> str | Expression | Template:
    """A profile's text: as is without ``${{``; one expression if that is all it is; else a template."""
    if "${{" not in text:
        return text
    whole = WHOLE.fullmatch(text)
    if whole and "${{" not in whole.group(1) and "}}" not in whole.group(1):
        return _bracketed(whole.group(1), text.index("${{") + 3, inputs)
    parts: list[str | Expression] = []
    at = 0
    for match in BRACKETED.finditer(text):
        if match.start() > at:
            parts.append(text[at : match.start()])
        parts.append(_bracketed(match.group(1), match.start() + 3, inputs))
        at = match.end()
    rest = text[at:]
    if "${{" in rest:
        raise ExpressionSyntaxError("${{ is not closed with }}", text.index("${{", at) + 1)
    if rest:
        parts.append(rest)
    return Template(tuple(parts))


def parse_condition(text: str, inputs: Mapping[str, Value] | None = None) -> Expression:
    """A condition (if, while, wait_until): ``${{ ... }}``, or the expression without brackets, as the reference takes."""
    whole = WHOLE.fullmatch(text)
    if whole:
        return _bracketed(whole.group(1), text.index("${{") + 3, inputs)
    return parse_expression(text, inputs)


def _bracketed(inner: str, offset: int, inputs: Mapping[str, Value] | None) -> Expression:
    """Parse the text between the brackets, reporting columns in the whole value."""
    try:
        return parse_expression(inner, inputs)
    except ExpressionSyntaxError as e:
        message = str(e).split(": ", 1)[1]
        raise ExpressionSyntaxError(message, e.column + offset) from None

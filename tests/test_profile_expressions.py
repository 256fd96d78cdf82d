"""The profile expression language: parsing, precedence, types, lookups, errors with their columns, limits."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import TestCase

from pioreactor_appliance.profile_expressions import (
    MAX_DEPTH,
    MAX_LENGTH,
    Context,
    EvaluationError,
    Expression,
    ExpressionSyntaxError,
    MissingValue,
    Template,
    parse_condition,
    parse_expression,
    parse_value,
)

PAYLOADS = {
    ("pio1", "stirring", "target_rpm"): b"500",
    ("pio2", "stirring", "target_rpm"): b"300.5",
    ("pio1", "stirring", "$state"): b"ready",
    ("pio1", "od_reading", "ods"): json.dumps({"od_raw": {"1": {"od": 0.25}}, "timestamp": "2026-01-05T12:00:00Z"}).encode(),
    ("pio1", "growth_rate_calculating", "growth_rate"): json.dumps({"growth_rate": 0.4}).encode(),
    ("pio1", "dosing_automation", "enabled"): b"True",
    ("pio1", "odd", "list"): b"[1, 2]",
    ("pio1", "odd", "deep"): b"[" * 100_000 + b"]" * 100_000,
    ("pio1", "odd", "huge"): b'{"n": 1' + b"0" * 400 + b"}",
}


def context(unit: str = "pio1", hours: float = 2.5) -> Context:
    return Context(unit, "stirring", "exp1", hours, lambda: 0.25, lambda u, j, s: PAYLOADS.get((u, j, s)))


def value(text: str, inputs: dict[str, Any] | None = None, **where: Any) -> Any:
    return parse_expression(text, inputs).evaluate(context(**where))


class ValueTests(TestCase):
    def test_arithmetic_follows_the_usual_precedence(self) -> None:
        for text, expected in [
            ("1 + 2 * 3", 7.0),
            ("(1 + 2) * 3", 9.0),
            ("2 ** 3 ** 2", 512.0),
            ("-2 ** 2", -4.0),
            ("2 ** -1", 0.5),
            ("10 - 4 - 3", 3.0),
            ("12 / 4 / 3", 1.0),
            ("1.5e2 + .5", 150.5),
            ("- - 3", 3.0),
        ]:
            self.assertEqual(value(text), expected, text)

    def test_comparisons_and_logic(self) -> None:
        for text, expected in [
            ("1 < 2 and 2 <= 2", True),
            ("not 1 > 2", True),
            ("true or false and false", True),
            ("(true or false) and false", False),
            ("not true == false", True),  # not binds looser than ==
            ("3 != 3", False),
            ("abc < abd", True),
            ("True == true", True),
            ("FALSE", False),
        ]:
            self.assertIs(value(text), expected, text)

    def test_bare_words_are_text_and_inputs_take_their_values(self) -> None:
        self.assertEqual(value("ready"), "ready")
        self.assertIs(value("pio1:stirring:$state == ready"), True)
        self.assertIs(value("unit() == pio1"), True)
        self.assertEqual(value("target * 2", {"target": 400.0}), 800.0)
        self.assertEqual(value("target", {"other": 1.0}), "target")

    def test_equality_never_mixes_types(self) -> None:
        self.assertIs(value("1 == true"), False)
        self.assertIs(value("0 == false"), False)
        self.assertIs(value("1 == one"), False)

    def test_functions(self) -> None:
        self.assertEqual(value("random()"), 0.25)
        self.assertEqual(value("unit()", unit="pio2"), "pio2")
        self.assertEqual(value("hours_elapsed() * 60"), 150.0)
        self.assertEqual(value("experiment()"), "exp1")
        self.assertEqual(value("job_name ( )"), "stirring")

    def test_lookups_read_the_latest_payload_as_a_number_bool_or_text(self) -> None:
        self.assertEqual(value("pio1:stirring:target_rpm + 1"), 501.0)
        self.assertEqual(value("::stirring:target_rpm", unit="pio2"), 300.5, ":: is the unit the action runs on")
        self.assertEqual(value("pio1:od_reading:ods.od_raw.1.od"), 0.25, ".key indexes JSON")
        self.assertEqual(value("pio1:growth_rate_calculating:growth_rate.growth_rate > 0.3"), True)
        self.assertIs(value("pio1:dosing_automation:enabled"), True)
        self.assertEqual(
            [(lookup.unit, lookup.job, lookup.setting, lookup.keys) for lookup in parse_expression("pio-1:od_reading:ods.od_raw.1 > ::stirring:$state").lookups()],
            [(None, "stirring", "$state", ()), ("pio-1", "od_reading", "ods", ("od_raw", "1"))],
        )

    def test_what_cannot_be_computed_raises_evaluation_errors(self) -> None:
        for text, error, message in [
            ("pio9:stirring:target_rpm > 1", MissingValue, "pio9:stirring:target_rpm has no value yet"),
            ("pio1:od_reading:ods.nothing", MissingValue, "no key 'nothing'"),
            ("pio1:stirring:$state.key", EvaluationError, "not JSON"),
            ("pio1:stirring:target_rpm.key", MissingValue, "no key 'key'"),
            ("pio1:odd:list.0", MissingValue, "no key '0'"),
            ("pio1:odd:deep.x", EvaluationError, "not JSON"),
            ("pio1:odd:huge.n", EvaluationError, "not a finite number"),
            ("pio1:od_reading:ods.od_raw", EvaluationError, "not a number, text or true/false"),
            ("1 / 0", EvaluationError, "division by zero"),
            ("0 ** -1", EvaluationError, "division by zero"),
            ("abc + 1", EvaluationError, "\\+ takes numbers, not the text 'abc'"),
            ("true * 2", EvaluationError, "takes numbers, not true/false"),
            ("1 and true", EvaluationError, "and takes true/false, not a number"),
            ("not abc", EvaluationError, "not takes true/false"),
            ("abc < 1", EvaluationError, "< takes numbers"),
            ("10 ** 400", EvaluationError, "not a finite number"),
            ("(-8) ** 0.5", EvaluationError, "not a real number"),
            ("2 ** 1001", EvaluationError, "exponent is at most 1000"),
            ("1e308 * 10", EvaluationError, "not a finite number"),
        ]:
            with self.assertRaisesRegex(error, message, msg=text):
                value(text)

    def test_and_and_or_stop_early(self) -> None:
        self.assertIs(value("false and pio9:stirring:target_rpm > 1"), False)
        self.assertIs(value("true or pio9:stirring:target_rpm > 1"), True)


class SyntaxTests(TestCase):
    def test_each_syntax_error_names_its_column(self) -> None:
        for text, column, message in [
            ("", 1, "the expression is empty"),
            ("1 +", 4, "expected a number, .* found the end of the expression"),
            ("(1 + 2", 7, "expected '\\)'"),
            ("1 2", 3, "expected an operator or the end, found '2'"),
            ("'abc' == x", 1, "unexpected character \"'\" \\(text is written bare, without quotes\\)"),
            ("1 & 2", 3, "unexpected character '&'"),
            ("1 < 2 < 3", 7, "comparisons do not chain"),
            ("foo()", 1, "unknown function foo\\(\\)"),
            ("unit(1)", 6, "expected '\\)' \\(unit\\(\\) takes no arguments\\)"),
            ("1 + )", 5, "expected .* found '\\)'"),
            ("1e999", 1, "1e999 is too large a number"),
        ]:
            with self.assertRaisesRegex(ExpressionSyntaxError, f"^column {column}: {message}", msg=text):
                parse_expression(text)

    def test_limits_bound_the_work(self) -> None:
        with self.assertRaisesRegex(ExpressionSyntaxError, f"at most {MAX_LENGTH} characters"):
            parse_expression("1" + " " * MAX_LENGTH)
        with self.assertRaisesRegex(ExpressionSyntaxError, f"nests more than {MAX_DEPTH} deep"):
            parse_expression("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1))
        with self.assertRaisesRegex(ExpressionSyntaxError, "nests more than"):
            parse_expression("not " * (MAX_DEPTH + 1) + "true")
        with self.assertRaisesRegex(ExpressionSyntaxError, "nests more than"):
            parse_expression(" + ".join(["1"] * (MAX_DEPTH + 1)))
        self.assertEqual(value(" + ".join(["1"] * MAX_DEPTH)), float(MAX_DEPTH), "just inside the bound")
        self.assertEqual(value("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH), 1.0)


class ValueTextTests(TestCase):
    def test_a_whole_expression_keeps_its_type_and_text_around_expressions_is_a_template(self) -> None:
        self.assertEqual(parse_value("plain text"), "plain text")
        whole = parse_value(" ${{ 2 * 200 }} ")
        assert isinstance(whole, Expression)
        self.assertEqual(whole.evaluate(context()), 400.0)
        template = parse_value("rpm on ${{unit()}} is ${{ pio1:stirring:target_rpm }}; ${{ 1 > 2 }} and ${{ 0.5 }}")
        assert isinstance(template, Template)
        self.assertEqual(template.evaluate(context()), "rpm on pio1 is 500; false and 0.5")
        self.assertEqual(repr(template), "rpm on ${{unit()}} is ${{pio1:stirring:target_rpm}}; ${{1 > 2}} and ${{0.5}}")

    def test_errors_in_text_name_the_column_in_the_whole_value(self) -> None:
        with self.assertRaisesRegex(ExpressionSyntaxError, "^column 14: unexpected character '#'"):
            parse_value("value is ${{ # }}")
        with self.assertRaisesRegex(ExpressionSyntaxError, "^column 4: \\${{ is not closed"):
            parse_value("ok ${{ 1 + 1")

    def test_conditions_take_an_expression_with_or_without_brackets(self) -> None:
        self.assertIs(parse_condition("${{ 1 < 2 }}").evaluate(context()), True)
        self.assertIs(parse_condition("pio1:stirring:target_rpm >= 500").evaluate(context()), True)
        with self.assertRaisesRegex(ExpressionSyntaxError, "^column 8: .* found the end"):
            parse_condition("${{ 1 <}}")

"""Steps and fields: their JSON shapes, and how inputs are typed and bounded."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.calibration_sessions.steps import Field, InputError, Step


class FieldTests(SynchronousTestCase):
    def test_json_shape(self) -> None:
        rendered = Field(
            "hz",
            "PWM frequency (Hz)",
            "float",
            default=250.0,
            minimum=0.1,
            maximum=10000,
        ).as_json()
        self.assertEqual(
            list(rendered),
            [
                "name",
                "label",
                "field_type",
                "required",
                "default",
                "options",
                "minimum",
                "maximum",
                "min_error_msg",
                "max_error_msg",
                "help_text",
            ],
        )
        self.assertEqual(Field("ok", "OK?", "bool").as_json()["options"], ["yes", "no"])

    def test_bool_words(self) -> None:
        field = Field("ok", "OK?", "bool")
        for raw in (True, "true", "Yes", "y", "1", 1):
            self.assertIs(field.read(raw), True, raw)
        for raw in (False, "false", "no", "N", "0", 0):
            self.assertIs(field.read(raw), False, raw)
        for raw in ("maybe", 2, [], None):
            self.assertRaises(InputError, field.read, raw)

    def test_float_list_takes_a_list_or_commas(self) -> None:
        field = Field("values", "Values", "float_list", minimum=0)
        self.assertEqual(field.read([1, 2.5]), [1.0, 2.5])
        self.assertEqual(field.read("1, 2.5,3"), [1.0, 2.5, 3.0])
        for raw in ("1,x", [1, "x"], [], {"a": 1}, [True]):
            with self.assertRaises(InputError) as caught:
                field.read(raw)
            self.assertEqual(
                str(caught.exception), "Invalid 'values', expected list of numbers."
            )
        with self.assertRaises(InputError) as caught:
            field.read([1, -2])
        self.assertEqual(str(caught.exception), "'values' must be >= 0.")

    def test_bounds_use_the_custom_message_first(self) -> None:
        field = Field(
            "od", "OD", "float", minimum=0, maximum=5, max_error_msg="Too cloudy."
        )
        self.assertEqual(field.read("2.5"), 2.5)
        for raw, message in (
            (-1, "'od' must be >= 0."),
            (6, "Too cloudy."),
            ("nan", "Invalid 'od', expected a number."),
            (True, "Invalid 'od', expected a number."),
        ):
            with self.assertRaises(InputError) as caught:
                field.read(raw)
            self.assertEqual(str(caught.exception), message)

    def test_int_and_choice(self) -> None:
        self.assertEqual(Field("n", "N", "int").read("3"), 3)
        self.assertRaises(InputError, Field("n", "N", "int").read, 2.5)
        choice = Field("c", "C", "choice", options=("a", "b"))
        self.assertEqual(choice.read("a"), "a")
        self.assertRaises(InputError, choice.read, "z")


class StepTests(SynchronousTestCase):
    def test_read_fills_defaults_and_requires_the_rest(self) -> None:
        step = Step(
            "s",
            "form",
            "S",
            fields=(
                Field("a", "A", "float"),
                Field("b", "B", "float", required=False, default=1.5),
            ),
        )
        self.assertEqual(step.read({"a": 2}), {"a": 2.0, "b": 1.5})
        with self.assertRaises(InputError) as caught:
            step.read({"a": " ", "b": 3})
        self.assertEqual(str(caught.exception), "Missing 'a'.")

    def test_json_shape_hides_the_action(self) -> None:
        rendered = Step("s", "info", "Title", "Body").as_json()
        self.assertEqual(
            rendered,
            {
                "step_id": "s",
                "step_type": "info",
                "title": "Title",
                "body": "Body",
                "fields": [],
                "metadata": {},
            },
        )

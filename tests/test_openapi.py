"""The API documents against the route table they come from: same operations, same parameters, same body rules."""

from __future__ import annotations

import re
from typing import Any, NotRequired, TypedDict

import attrs
import jsonschema
from attrs import define, field
from klein import Klein
from openapi_spec_validator import validate
from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance import __version__
from pioreactor_appliance.errors import error_body
from pioreactor_appliance.limits import Limits
from pioreactor_appliance.openapi import (
    ERROR_SCHEMA,
    Schemas,
    document,
    openapi_path,
    successes,
    under,
)
from pioreactor_appliance.resources.routing import RouteInfo, route

from .helpers import build_unit

PREFIXES = ("/api", "/unit_api", "/exports")


@define
class Window:
    lookback: int = field(metadata={"minimum": 1, "limit": "lookback_hours"})
    smooth: bool = False
    unit: str = ""


class Readings(TypedDict):
    """Points in a window."""

    points: list[float]
    note: NotRequired[str | None]


class Queried:
    app = Klein()

    @route(app, "/unit_api/readings/<int:channel>", ["GET"], query=Window, returns=Readings)
    def readings(self, request: Any, channel: int, query: Window) -> Readings:
        """Readings of one channel.

        Bounded by the unit's limits.
        """
        return {"points": []}


def routes_of(case: SynchronousTestCase, role: str) -> list[RouteInfo]:
    return build_unit(case, role).getServiceNamed("http").factory.resource.routes()


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in doc["paths"].items() for method in item}


class DocumentTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.routes = routes_of(self, "leader")
        self.docs = {prefix: document(self.routes, prefix, Limits.defaults(), "test") for prefix in PREFIXES}

    def test_covers_exactly_the_route_table(self) -> None:
        for prefix, doc in self.docs.items():
            expected = {(openapi_path(i.path), m.lower()) for i in under(prefix, self.routes) for m in i.methods}
            self.assertEqual(operations(doc), expected, prefix)
        self.assertEqual(sum(len(under(prefix, self.routes)) for prefix in PREFIXES), len(self.routes))
        self.assertIn(("/api/workers/{unit}", "delete"), operations(self.docs["/api"]))

    def test_is_valid_openapi_3_1(self) -> None:
        for doc in self.docs.values():
            validate(doc)
            self.assertEqual((doc["openapi"], doc["info"]["version"]), ("3.1.0", __version__))

    def test_every_path_parameter_is_declared(self) -> None:
        for doc in self.docs.values():
            for path, item in doc["paths"].items():
                for method, operation in item.items():
                    declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
                    self.assertEqual(declared, set(re.findall(r"{(\w+)}", path)), f"{method} {path}")

    def test_body_schemas_follow_the_strict_converter(self) -> None:
        bodies = [info.body for info in self.routes if info.body is not None]
        self.assertGreater(len(bodies), 5)
        for doc in self.docs.values():
            for cls in bodies:
                schema = doc["components"]["schemas"].get(cls.__name__)
                if schema is None:
                    continue
                names = [f.name for f in attrs.fields(cls)]
                self.assertEqual(list(schema["properties"]), names, cls)
                self.assertEqual(schema.get("required", []), [f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING], cls)
                self.assertIs(schema["additionalProperties"], False)

    def test_summary_is_the_docstring(self) -> None:
        operation = self.docs["/api"]["paths"]["/api/workers/{unit}"]["get"]
        self.assertEqual(operation["summary"], "One worker.")

    def test_bodies_and_errors_have_their_answers(self) -> None:
        post = self.docs["/api"]["paths"]["/api/experiments"]["post"]
        self.assertEqual(post["requestBody"]["content"]["application/json"]["schema"], {"$ref": "#/components/schemas/NewExperiment"})
        self.assertLessEqual({"201", "400", "401", "403", "404", "405", "413", "415", "429", "default"}, set(post["responses"]))
        listing = self.docs["/api"]["paths"]["/api/experiments"]["get"]["responses"]
        self.assertNotIn("415", listing)
        self.assertNotIn("400", listing)


class RouteDeclarationTests(SynchronousTestCase):
    def test_every_route_declares_what_it_returns(self) -> None:
        schemas = Schemas()
        for info in routes_of(self, "leader"):
            self.assertIsNotNone(info.returns, info.path)
            self.assertIn(info.status, successes(info), info.path)
            for kind in successes(info).values():
                schemas.of(kind)  # raises for a type the generator cannot describe

    def test_task_routes_answer_202(self) -> None:
        schemas = Schemas()
        tasks = [info for info in routes_of(self, "leader") if schemas.of(info.returns) == {"$ref": "#/components/schemas/Accepted"}]
        self.assertGreaterEqual(len(tasks), 4)
        self.assertEqual({info.status for info in tasks}, {202})


class GeneratorTests(SynchronousTestCase):
    def test_query_parameters_are_bounded_by_the_units_limits(self) -> None:
        limits = attrs.evolve(Limits.defaults(), lookback_hours=17)
        doc = document(Queried.readings.route_infos, "/unit_api", limits, "t")
        parameters = {p["name"]: p for p in doc["paths"]["/unit_api/readings/{channel}"]["get"]["parameters"]}
        self.assertEqual(parameters["channel"]["schema"]["type"], "integer")
        self.assertEqual(parameters["lookback"], {"name": "lookback", "in": "query", "required": True, "schema": {"type": "integer", "minimum": 1, "maximum": 17}})
        self.assertEqual(parameters["smooth"]["schema"], {"type": "boolean"})
        self.assertFalse(parameters["smooth"]["required"])
        self.assertIn("400", doc["paths"]["/unit_api/readings/{channel}"]["get"]["responses"])
        validate(doc)

    def test_typeddict_keys_and_nullable_values(self) -> None:
        schemas = Schemas()
        schemas.of(Readings)
        schema = schemas.components["Readings"]
        self.assertEqual(schema["required"], ["points"])
        self.assertEqual(schema["properties"]["note"], {"anyOf": [{"type": "string"}, {"type": "null"}]})
        self.assertEqual(schema["description"], "Points in a window.")

    def test_description_is_the_rest_of_the_docstring(self) -> None:
        doc = document(Queried.readings.route_infos, "/unit_api", Limits.defaults(), "t")
        operation = doc["paths"]["/unit_api/readings/{channel}"]["get"]
        self.assertEqual((operation["summary"], operation["description"]), ("Readings of one channel.", "Bounded by the unit's limits."))

    def test_undescribable_types_and_name_clashes_are_refused(self) -> None:
        self.assertRaises(TypeError, Schemas().of, set[int])
        clash = TypedDict("Readings", {"other": int})
        schemas = Schemas()
        schemas.of(Readings)
        self.assertRaises(TypeError, schemas.of, clash)

    def test_error_schema_matches_error_bodies(self) -> None:
        jsonschema.validate(error_body(404, "Not found."), ERROR_SCHEMA)
        jsonschema.validate(error_body(400, "Bad.", "the cause", "do this"), ERROR_SCHEMA)
        without_info = {k: v for k, v in error_body(400, "Bad.").items() if k != "error_info"}
        self.assertRaises(jsonschema.ValidationError, jsonschema.validate, without_info, ERROR_SCHEMA)

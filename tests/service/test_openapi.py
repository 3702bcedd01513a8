"""The OpenAPI document: tags, summaries and examples everywhere; errors as problem+json."""

from __future__ import annotations

import pytest

from app.main import create_app
from app.settings import Settings

from .conftest import Service

METHODS = {"get", "post", "put", "patch", "delete"}
BINARY = {"application/zip", "image/png"}


@pytest.fixture(scope="module")
def doc(tmp_path_factory: pytest.TempPathFactory) -> dict:
    data_dir = tmp_path_factory.mktemp("openapi")
    return create_app(Settings(data_dir=data_dir, database_url="", broker_url="")).openapi()


def operations(doc: dict) -> list[tuple[str, str, dict]]:
    return [
        (p, m, op) for p, item in doc["paths"].items() for m, op in item.items() if m in METHODS
    ]


def has_example(schemas: dict, content: dict) -> bool:
    """An example on the response, on its schema, or on the schema of its items."""
    if "example" in content:
        return True
    schema = content.get("schema", {})
    refs = [schema.get("$ref", ""), schema.get("items", {}).get("$ref", "")]
    for ref in filter(None, refs):
        target = schemas[ref.rsplit("/", 1)[1]]
        props = target.get("properties", {}).values()
        item_refs = [p["items"]["$ref"] for p in props if "$ref" in p.get("items", {})]
        if "example" in target or any("examples" in p for p in props):
            return True
        if any("example" in schemas[r.rsplit("/", 1)[1]] for r in item_refs):
            return True
    return False


def test_every_route_has_tags_summary_and_examples(doc: dict) -> None:
    schemas = doc["components"]["schemas"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/healthz", "/readyz"} <= doc["paths"].keys()
    for path, method, op in operations(doc):
        assert op.get("tags") and op.get("summary"), f"{method} {path}"
        for code, resp in op["responses"].items():
            for media, content in resp.get("content", {}).items():
                if media not in BINARY:
                    assert has_example(schemas, content), (method, path, code, media)


def test_error_responses_are_documented_as_problem_json(doc: dict) -> None:
    assert "Problem" in doc["components"]["schemas"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    codes = set()
    for _, _, op in operations(doc):
        for code, resp in op["responses"].items():
            if code[0] in "45":
                codes.add(code)
                assert list(resp["content"]) == ["application/problem+json"]
    assert {"401", "404", "409", "413", "422", "429", "503"} <= codes


def test_docs_and_schema_are_served(service: Service) -> None:
    assert "swagger" in service.client.get("/docs").text.lower()
    assert service.client.get("/openapi.json").json()["info"]["title"]

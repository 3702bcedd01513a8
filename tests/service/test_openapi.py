"""The OpenAPI document: tags, summaries and examples everywhere; errors as problem+json."""

from __future__ import annotations

import pytest

from app.main import create_app
from jobs.settings import Settings

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


@pytest.mark.slow
def test_docs_and_schema_are_served(service: Service) -> None:
    assert "swagger" in service.client.get("/docs").text.lower()
    assert service.client.get("/openapi.json").json()["info"]["title"]


def test_every_numeric_query_parameter_is_bounded(doc: dict) -> None:
    """Bounds in the schema: out-of-range values are a 422, never a number the database
    cannot hold."""
    found = 0
    for path, method, op in operations(doc):
        for param in op.get("parameters", []):
            schema = param["schema"]
            if param["in"] == "query" and schema.get("type") in ("integer", "number"):
                found += 1
                assert "minimum" in schema and "maximum" in schema, (method, path, param["name"])
    assert found >= 2


def test_upload_links_to_the_routes_about_the_new_job(doc: dict) -> None:
    links = doc["paths"]["/v1/jobs"]["post"]["responses"]["202"]["links"]
    assert links.pop("GetJobDataset")["parameters"] == {"dataset_id": "$response.body#/dataset_id"}
    targets = set()
    for link in links.values():
        assert link["parameters"] == {"job_id": "$response.body#/id"}
        pointer = link["operationRef"].removeprefix("#/paths/")
        encoded_path, method = pointer.rsplit("/", 1)
        path = encoded_path.replace("~1", "/").replace("~0", "~")
        assert method in doc["paths"][path], link
        targets.add((method, path))
    about_job = {(m, p) for p, m, _ in operations(doc) if p.startswith("/v1/jobs/{job_id}")}
    # Every route about a job, except its event stream (open until the job ends).
    assert about_job - targets == {("get", "/v1/jobs/{job_id}/events")}


def link_target(doc: dict, link: dict) -> tuple[str, str]:
    encoded_path, method = link["operationRef"].removeprefix("#/paths/").rsplit("/", 1)
    path = encoded_path.replace("~1", "/").replace("~0", "~")
    assert method in doc["paths"][path], link
    return method, path


def test_a_datasets_id_links_to_new_jobs_and_the_dataset_routes(doc: dict) -> None:
    for path, method, status in [
        ("/v1/datasets", "post", "201"),
        ("/v1/datasets/{dataset_id}", "get", "200"),
    ]:
        links = doc["paths"][path][method]["responses"][status]["links"]
        targets = {name: link_target(doc, link) for name, link in links.items()}
        assert set(targets.values()) == {
            ("post", "/v1/jobs"),
            ("get", "/v1/datasets/{dataset_id}"),
            ("delete", "/v1/datasets/{dataset_id}"),
        }
        job = links["CreateJobOnDataset"]["requestBody"]
        assert job["dataset_id"] == "$response.body#/id"


def test_the_builtin_dataset_is_the_example_of_a_json_job(doc: dict) -> None:
    body = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert body["application/json"]["example"]["dataset_id"] == "demo-mnist-1-2-3"
    schemas = doc["components"]["schemas"]
    request = schemas["JobRequest"]
    assert request["required"] == ["dataset_id"] and request["additionalProperties"] is False
    config = schemas["JobConfig"]
    assert config["additionalProperties"] is False
    assert config["properties"]["seeds"]["anyOf"][0] == {
        "type": "integer", "minimum": 1, "maximum": 20
    }  # fmt: skip


def test_every_refusal_of_an_upload_is_documented(doc: dict) -> None:
    codes = set(doc["paths"]["/v1/jobs"]["post"]["responses"])
    assert {"202", "400", "401", "404", "413", "415", "422", "429", "503"} <= codes
    codes = set(doc["paths"]["/v1/datasets"]["post"]["responses"])
    assert {"201", "400", "401", "413", "422", "503"} <= codes


@pytest.mark.slow
def test_page_bounds_are_enforced(service: Service) -> None:
    """The fuzzer's 500: an offset past the database's integer. Now a 422 on both backends,
    and the documented maximum itself works."""
    from app.routes.jobs import OFFSET_LIMIT, PAGE_SIZE_LIMIT

    get = service.client.get
    huge = {"limit": 382, "offset": 3072677034452468105216}
    body = get("/v1/jobs", params=huge).json()
    assert body["status"] == 422 and body["errors"][0]["loc"] == ["query", "offset"], body
    assert get("/v1/jobs", params={"offset": OFFSET_LIMIT + 1}).status_code == 422
    assert get("/v1/jobs", params={"limit": PAGE_SIZE_LIMIT + 1}).status_code == 422
    at_max = get("/v1/jobs", params={"offset": OFFSET_LIMIT, "limit": PAGE_SIZE_LIMIT})
    assert at_max.status_code == 200, at_max.text
    assert at_max.json()["items"] == []


@pytest.mark.slow
def test_allow_lists_every_method_of_the_path(service: Service) -> None:
    job = "/v1/jobs/0b7e0d52-5c4f-4c59-9d0e-3f1c1f0f2a11"
    for method, path, allowed in [
        ("OPTIONS", job, "DELETE, GET"),
        ("PUT", job, "DELETE, GET"),
        ("PATCH", "/v1/jobs", "GET, POST"),
        ("DELETE", f"{job}/report", "GET"),
        ("POST", "/docs", "GET"),
    ]:
        resp = service.client.request(method, path)
        assert resp.status_code == 405, (method, path, resp.text)
        assert resp.headers["allow"] == allowed, (method, path)
        assert resp.headers["content-type"].startswith("application/problem+json")


def test_every_job_route_documents_401_and_503(doc: dict) -> None:
    """Any of them answers 401 without a key and 503 while the database is unreachable."""
    for path, method, op in operations(doc):
        if path.startswith(("/v1/jobs", "/v1/datasets")):
            assert {"401", "503"} <= set(op["responses"]), (method, path)

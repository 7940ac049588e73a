"""docker-compose.yml and the Dockerfile, checked by reading: CI has no Docker engine.

The Compose file is validated against the Compose Specification's JSON Schema, kept in the
``shared/specs/`` folder next to the repository, and then checked for the properties the
schema cannot express (broker persistence, start-up order, no literal secrets).

PyYAML reads YAML 1.1, Compose reads YAML 1.2: an unquoted ``yes``/``no``/``on``/``off`` is a
boolean here and a string for Compose, so such values are quoted in the Compose file.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import Draft202012Validator, validator_for

Document = dict[str, Any]

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
# CI clones the repository next to the shared/ folder.
COMPOSE_SPEC = Path(__file__).resolve().parents[2] / "shared" / "specs" / "compose-spec.json"

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)
# A value taken from the environment: $VAR, ${VAR}, ${VAR:?message}, ${VAR?message},
# ${VAR:-} or ${VAR-}. A non-empty default (${VAR:-hunter2}) is a literal secret in disguise.
FROM_ENVIRONMENT = re.compile(
    r"\$[A-Za-z_][A-Za-z0-9_]*|\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*|:?-)?\}"
)


# --- helpers -------------------------------------------------------------------------------


def canonical_dialect(uri: str) -> str:
    """The meta-schema URI as jsonschema knows it.

    Drafts 3 to 7 are identified by ``http://json-schema.org/draft-0N/schema#``, but they are
    also served (and often declared, as the Compose schema does) over https, without the
    trailing ``#``. Both name the same dialect.
    """
    uri = uri.rstrip("#")
    if uri.startswith("https://json-schema.org/draft-0"):
        uri = "http://" + uri.removeprefix("https://")
    return uri


def validator_class(schema: Document) -> type[Validator]:
    """The validator class for the dialect named by the schema's ``$schema``.

    ``validator_for`` would fall back to the newest draft, with a DeprecationWarning, for a
    URI it does not know; an unknown dialect is an error here instead.
    """
    declared = schema.get("$schema")
    if not isinstance(declared, str):
        pytest.fail(f"{COMPOSE_SPEC}: no $schema, so the JSON Schema dialect is unknown")
    dialect = canonical_dialect(declared)
    cls: type[Validator] = validator_for({"$schema": dialect}, default=Draft202012Validator)
    meta_id = cls.META_SCHEMA.get("$id", cls.META_SCHEMA.get("id"))
    if not isinstance(meta_id, str) or canonical_dialect(meta_id) != dialect:
        pytest.fail(f"{COMPOSE_SPEC}: jsonschema has no validator for $schema {declared!r}")
    return cls


def deepest_cause(error: ValidationError) -> ValidationError:
    """Of the branches of a oneOf/anyOf error, the one that got furthest into the document."""
    causes = [deepest_cause(cause) for cause in error.context or []]
    return max(causes, key=lambda cause: len(cause.absolute_path), default=error)


def schema_errors(validator: Validator, document: Document) -> list[str]:
    """One line per violation: where the most specific cause is, and what it is."""
    causes = (deepest_cause(error) for error in validator.iter_errors(document))
    return sorted(f"{cause.json_path}: {cause.message}" for cause in causes)


def argv(command: str | list[str] | None) -> list[str]:
    """A Compose ``command`` (shell string or exec list) as a list of arguments."""
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return list(command)


def environment(service: Document) -> Iterator[tuple[str, Any]]:
    """(name, value) of a service's environment; value None means passed through."""
    env = service.get("environment") or {}
    if isinstance(env, dict):
        yield from env.items()
        return
    for entry in env:
        name, sep, value = entry.partition("=")
        yield name, value if sep else None


def literal_secrets(compose: Document) -> list[str]:
    """``service.NAME`` of every secret-looking variable that is given a literal value."""
    found = []
    for service_name, service in compose.get("services", {}).items():
        for name, value in environment(service):
            if not SECRET_NAME.search(name) or value is None:
                continue
            if not (isinstance(value, str) and FROM_ENVIRONMENT.fullmatch(value)):
                found.append(f"{service_name}.{name}")
    return found


def named_volumes(service: Document) -> Iterator[str]:
    """Names of the named volumes a service mounts (bind mounts and tmpfs excluded)."""
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, sep, _target = volume.partition(":")
            if sep and not source.startswith((".", "/", "~", "$")):
                yield source
        elif volume.get("type") == "volume" and "source" in volume:
            yield volume["source"]


def dockerfile_final_stage(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the last build stage, continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments, parser directives, and comment lines inside a continuation
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        pending = ""
        instructions.append((keyword.upper(), arguments.strip()))
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def dockerfile_argv(arguments: str) -> list[str]:
    """CMD/ENTRYPOINT arguments as argv: exec form is JSON, shell form runs in /bin/sh -c."""
    if arguments.startswith("["):
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError:
            parsed = None  # not valid JSON: Docker runs it in a shell
        if isinstance(parsed, list) and all(isinstance(part, str) for part in parsed):
            return parsed
    return ["/bin/sh", "-c", arguments]


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_spec() -> Document:
    if not COMPOSE_SPEC.is_file():
        pytest.fail(
            f"Compose Specification schema not found at {COMPOSE_SPEC}: the repository must be "
            "checked out next to the shared/ folder (shared/specs/compose-spec.json)"
        )
    spec: Document = json.loads(COMPOSE_SPEC.read_text(encoding="utf-8"))
    return spec


@pytest.fixture(scope="module")
def compose_validator(compose_spec: Document) -> Validator:
    cls = validator_class(compose_spec)
    cls.check_schema(compose_spec)
    return cls(compose_spec, format_checker=cls.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def compose() -> Document:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{COMPOSE_FILE} is not a YAML mapping"
    return document


# --- the schema ----------------------------------------------------------------------------


def test_compose_spec_is_a_valid_schema(compose_spec: Document) -> None:
    validator_class(compose_spec).check_schema(compose_spec)


def test_canonical_dialect_maps_https_draft_07_to_its_meta_schema() -> None:
    assert canonical_dialect("https://json-schema.org/draft-07/schema") == (
        "http://json-schema.org/draft-07/schema"
    )
    assert canonical_dialect("https://json-schema.org/draft/2020-12/schema") == (
        "https://json-schema.org/draft/2020-12/schema"
    )


def test_compose_file_matches_the_compose_specification(
    compose_validator: Validator, compose: Document
) -> None:
    assert schema_errors(compose_validator, compose) == []


def _set(document: Document, path: tuple[str, ...], value: Any) -> None:
    *parents, last = path
    node = document
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


# Not services.redis.healthcheck.retries = "many": the schema types retries as number or
# string, so that mutation is valid and would prove nothing.
MUTATIONS = {
    "unknown top-level key": (("servicez",), {"web": {"image": "nginx"}}),
    "misspelt service key": (("services", "worker", "depend_on"), ["redis"]),
    "unknown depends_on condition": (
        ("services", "worker", "depends_on", "redis", "condition"),
        "service_ready",
    ),
    "healthcheck interval as a number": (("services", "redis", "healthcheck", "interval"), 5),
    "environment value as a list": (("services", "worker", "environment", "REDIS_URL"), ["x"]),
}


@pytest.mark.parametrize(("path", "value"), MUTATIONS.values(), ids=MUTATIONS.keys())
def test_schema_rejects_an_invalid_compose_file(
    compose_validator: Validator, compose: Document, path: tuple[str, ...], value: Any
) -> None:
    assert schema_errors(compose_validator, compose) == []
    broken = copy.deepcopy(compose)
    _set(broken, path, value)

    errors = list(compose_validator.iter_errors(broken))

    assert errors, f"setting {'.'.join(path)} = {value!r} was accepted"
    # Every violation lies on the way to the mutated key (additionalProperties errors are
    # reported at the object that holds the unknown key).
    for error in errors:
        assert tuple(error.absolute_path) == path[: len(error.absolute_path)], error.message


# --- what the schema cannot say ------------------------------------------------------------


def test_no_obsolete_version_key(compose: Document) -> None:
    assert "version" not in compose


def test_redis_persists_and_never_evicts(compose: Document) -> None:
    args = argv(compose["services"]["redis"].get("command"))

    assert "--appendonly" in args, args
    assert args[args.index("--appendonly") + 1] == "yes", args
    assert "--maxmemory-policy" in args, args
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction", args


def test_redis_has_a_ping_healthcheck(compose: Document) -> None:
    healthcheck = compose["services"]["redis"].get("healthcheck")

    assert healthcheck, "redis has no healthcheck"
    assert healthcheck.get("disable") is not True
    test = healthcheck["test"]
    words = argv(test) if isinstance(test, str) else [w for part in test for w in part.split()]
    assert words[0] in {"CMD", "CMD-SHELL"}, test
    assert "redis-cli" in words, test
    assert "ping" in words, test


def test_worker_waits_for_a_healthy_redis(compose: Document) -> None:
    depends_on = compose["services"]["worker"].get("depends_on")

    assert isinstance(depends_on, dict), "depends_on needs the long form to carry a condition"
    assert depends_on["redis"]["condition"] == "service_healthy"


def test_dependencies_exist_and_healthy_ones_have_a_healthcheck(compose: Document) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        for target in depends_on:
            assert target in services, f"{name} depends on undefined service {target}"
            if isinstance(depends_on, dict):
                condition = depends_on[target]["condition"]
                if condition == "service_healthy":
                    assert services[target].get("healthcheck"), f"{target} has no healthcheck"


def test_named_volumes_are_declared(compose: Document) -> None:
    declared = compose.get("volumes") or {}
    for name, service in compose["services"].items():
        for volume in named_volumes(service):
            assert volume in declared, f"{name} mounts undeclared volume {volume}"


def test_worker_runs_letterpress_worker(compose: Document) -> None:
    worker = compose["services"]["worker"]

    assert argv(worker.get("command"))[:2] == ["letterpress", "worker"]
    env = dict(environment(worker))
    assert urlsplit(env["REDIS_URL"]).hostname in compose["services"]
    assert "/app/site" in {v.split(":")[1] for v in worker["volumes"] if isinstance(v, str)}


def test_no_literal_secrets(compose: Document) -> None:
    assert literal_secrets(compose) == []


def test_literal_secrets_are_found(compose: Document) -> None:
    document = copy.deepcopy(compose)
    document["services"]["worker"]["environment"] = {
        "SENDGRID_API_KEY": "SG.literal",
        "DB_PASSWORD": "${DB_PASSWORD:-hunter2}",
        "WEBHOOK_SECRET": "$${WEBHOOK_SECRET}",
        "SMTP_PORT_KEY": 25,
        "MAILGUN_API_KEY": "${MAILGUN_API_KEY:?set MAILGUN_API_KEY}",
        "POSTMARK_TOKEN": "${POSTMARK_TOKEN}",
        "FLOWER_PASSWORD": None,
        "LETTERPRESS_BASE_URL": "http://localhost:8000",
    }
    document["services"]["redis"]["environment"] = ["REDIS_PASSWORD=pw", "API_TOKEN"]

    assert sorted(literal_secrets(document)) == [
        "redis.REDIS_PASSWORD",
        "worker.DB_PASSWORD",
        "worker.SENDGRID_API_KEY",
        "worker.SMTP_PORT_KEY",
        "worker.WEBHOOK_SECRET",
    ]


# --- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_default_command_is_letterpress_worker() -> None:
    stage = dockerfile_final_stage(DOCKERFILE.read_text(encoding="utf-8"))
    entrypoint = [args for keyword, args in stage if keyword == "ENTRYPOINT"]
    cmd = [args for keyword, args in stage if keyword == "CMD"]
    assert entrypoint or cmd, "the final stage has neither CMD nor ENTRYPOINT"

    command = dockerfile_argv(entrypoint[-1]) if entrypoint else []
    if cmd and not (command and command[:2] == ["/bin/sh", "-c"]):
        command += dockerfile_argv(cmd[-1])  # a shell-form ENTRYPOINT ignores CMD
    words = [word for part in command for word in shlex.split(part)]

    assert "letterpress" in words, command
    position = words.index("letterpress")
    assert words[position + 1 : position + 2] == ["worker"], command


def test_dockerfile_runs_as_a_non_root_user() -> None:
    stage = dockerfile_final_stage(DOCKERFILE.read_text(encoding="utf-8"))
    users = [args for keyword, args in stage if keyword == "USER"]

    assert users, "the final stage never leaves root"
    assert users[-1].split(":")[0] not in {"root", "0"}

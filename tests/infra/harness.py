"""Build the Pulumi program under Pulumi's mock runtime, the way `pulumi up` would run it.

- `stack_config()` gives the program what the Pulumi CLI gives it: the defaults declared in
  Pulumi.yaml with the stack file's values on top, type-checked against the declared types.
- `build_stack()` runs `infra.program.main()` against mocks that answer like Google Cloud, and
  returns every registered resource (type, name, inputs, outputs, parent, dependencies) with the
  stack's outputs resolved.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks as pulumi_mocks

REPO = Path(__file__).resolve().parents[2]
PROJECT_FILE = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
PROJECT_NAME = PROJECT_FILE["name"]
PROGRAM_DIR = REPO / PROJECT_FILE["main"]
PROJECT_NUMBER = "123456789012"
QUEUE_NAME_SUFFIX = "a1b2c3d"  # Pulumi auto-names a queue with a random suffix; the mock's is fixed.
MOCK_ACCESS_TOKEN = "ya29.mock-access-token"


def stack_names() -> list[str]:
    """Every committed stack, from the Pulumi.<stack>.yaml files beside Pulumi.yaml."""
    return sorted(path.name[len("Pulumi."):-len(".yaml")] for path in REPO.glob("Pulumi.*.yaml"))


def stack_file_config(stack: str) -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"])


class ConfigTypeError(ValueError):
    pass


def _check_type(key: str, declared: dict[str, Any], value: Any) -> None:
    kind = declared["type"]
    ok = {
        "string": isinstance(value, str | int | float) and not isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list),
    }[kind]
    if kind == "array" and ok:
        for item in value:
            _check_type(key, declared["items"], item)
    if not ok:
        raise ConfigTypeError(f"configuration key '{key}' must be of type '{kind}', got {value!r}")


def _encode(value: Any) -> str:
    """Config values reach the program as strings; lists as JSON, as the CLI passes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def stack_config(stack: str, overrides: dict[str, Any] | None = None) -> dict[str, str]:
    """The config the CLI hands the program for `stack`, with `overrides` applied to the stack file first."""
    values = stack_file_config(stack)
    values.update(overrides or {})
    config: dict[str, str] = {}
    for key, declared in PROJECT_FILE["config"].items():
        full_key = f"{PROJECT_NAME}:{key}"
        if full_key in values:
            value = values.pop(full_key)
        elif "default" in declared:
            value = declared["default"]
        else:
            raise ConfigTypeError(f"stack {stack!r} is missing required configuration key {full_key!r}")
        _check_type(key, declared, value)
        config[full_key] = _encode(value)
    for key, value in values.items():
        if key.startswith(f"{PROJECT_NAME}:"):
            # The CLI passes undeclared keys through; the program ignores them. Tests should not write them.
            raise ConfigTypeError(f"{key!r} is not declared in Pulumi.yaml")
        config[key] = _encode(value)
    return config


def _matches(relative: str, rule: str) -> bool:
    """Docker's .dockerignore matching, as far as ours needs it: `**` spans any number of folders, none included."""
    return any(fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(relative, pattern + "/*")
               for pattern in (rule, rule.replace("/**/", "/"), rule.removeprefix("**/")))


def _sent_to_the_builder(root: Path) -> list[Path]:
    """The files of the build context its .dockerignore lets through (an allow-list: `**`, then `!pattern`s)."""
    rules = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    allowed = [rule[1:] for rule in rules if rule.startswith("!")]
    excluded = [rule for rule in rules if not rule.startswith("!") and rule != "**"]
    sent = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if (path.is_file() and any(_matches(relative, rule) for rule in allowed)
                and not any(_matches(relative, rule) for rule in excluded)):
            sent.append(path)
    return sent


def _digest_of_directory(location: str) -> str:
    """A content hash standing in for the registry digest: the same files sent give the same digest."""
    digest = hashlib.sha256()
    root = (PROGRAM_DIR / location).resolve()
    for path in _sent_to_the_builder(root):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class GcpMocks(pulumi.runtime.Mocks):
    """Answers like Google Cloud for the outputs the program reads."""

    def __init__(self, project: str) -> None:
        self.project = project

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        kind = args.typ
        if kind == "gcp:serviceaccount/account:Account":
            email = f"{args.inputs['accountId']}@{self.project}.iam.gserviceaccount.com"
            outputs.update(email=email, member=f"serviceAccount:{email}",
                           name=f"projects/{self.project}/serviceAccounts/{email}", uniqueId="1" + "0" * 20)
        elif kind == "gcp:projects/serviceIdentity:ServiceIdentity":
            agent = args.inputs["service"].split(".")[0]
            email = f"service-{PROJECT_NUMBER}@gcp-sa-{agent}.iam.gserviceaccount.com"
            outputs.update(email=email, member=f"serviceAccount:{email}")
        elif kind == "gcp:cloudtasks/queue:Queue":
            outputs.setdefault("name", f"{args.name}-{QUEUE_NAME_SUFFIX}")
            outputs["state"] = "RUNNING"
        elif kind == "gcp:cloudrunv2/service:Service":
            outputs["uri"] = f"https://{args.inputs['name']}-x7k2q9p3ma-uc.a.run.app"
        elif kind == "gcp:artifactregistry/repository:Repository":
            outputs["name"] = args.inputs["repositoryId"]
            outputs["registryUri"] = (f"{args.inputs['location']}-docker.pkg.dev/{self.project}/"
                                      f"{args.inputs['repositoryId']}")
        elif kind == "gcp:pubsub/topic:Topic":
            outputs["name"] = args.inputs.get("name", f"{args.name}-{QUEUE_NAME_SUFFIX}")
            return f"projects/{self.project}/topics/{outputs['name']}", outputs
        elif kind == "gcp:logging/projectSink:ProjectSink":
            outputs["name"] = args.inputs.get("name", f"{args.name}-{QUEUE_NAME_SUFFIX}")
            outputs["writerIdentity"] = (f"serviceAccount:service-{PROJECT_NUMBER}@"
                                         "gcp-sa-logging.iam.gserviceaccount.com")
        elif kind == "docker-build:index:Image":
            repository = args.inputs["tags"][0].rsplit(":", 1)[0]
            digest = _digest_of_directory(args.inputs["context"]["location"])
            outputs["ref"] = f"{repository}@sha256:{digest}"
            outputs["digest"] = f"sha256:{digest}"
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        if args.token == "gcp:organizations/getProject:getProject":
            return {"number": PROJECT_NUMBER, "projectId": args.args.get("projectId", self.project)}
        if args.token == "gcp:organizations/getClientConfig:getClientConfig":
            return {"accessToken": MOCK_ACCESS_TOKEN, "project": self.project}
        return {}


_SIG_KEY = pulumi.runtime.rpc._special_sig_key
_SECRET_SIG = pulumi.runtime.rpc._special_secret_sig


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(_SIG_KEY) == _SECRET_SIG


def reveal(value: Any) -> Any:
    """`value` with every secret wrapper replaced by what it wraps."""
    if is_secret(value):
        return reveal(value["value"])
    if isinstance(value, dict):
        return {key: reveal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [reveal(item) for item in value]
    return value


@dataclass
class Registration:
    """One resource as the engine saw it register."""

    type: str
    name: str
    urn: str
    parent: str
    dependencies: list[str]
    custom: bool
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock monitor, also keeping each registration's parent, dependencies, inputs and outputs."""

    def __init__(self, mocks: GcpMocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - the gRPC method's name
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            state = self.resources[response.urn].state
            self.registrations.append(Registration(
                type=request.type, name=request.name, urn=response.urn, parent=request.parent,
                dependencies=list(request.dependencies), custom=request.custom,
                inputs=pulumi.runtime.rpc.deserialize_properties(request.object), outputs=dict(state)))
        return response


@dataclass
class StackSnapshot:
    resources: list[Registration]
    outputs: dict[str, Any]

    def of_type(self, kind: str) -> list[Registration]:
        return [resource for resource in self.resources if resource.type == kind]

    def one(self, kind: str) -> Registration:
        found = self.of_type(kind)
        assert len(found) == 1, f"expected one {kind}, found {[r.name for r in found]}"
        return found[0]

    def by_urn(self, urn: str) -> Registration:
        return next(resource for resource in self.resources if resource.urn == urn)


@contextlib.contextmanager
def _in_program_directory() -> Iterator[None]:
    # The Pulumi CLI runs the program with `main` (infra/) as its working directory; relative paths in inputs
    # depend on it.
    previous = Path.cwd()
    os.chdir(PROGRAM_DIR)
    try:
        yield
    finally:
        os.chdir(previous)


def build_stack(stack: str, overrides: dict[str, Any] | None = None, config: dict[str, str] | None = None,
                main: Callable[[], object] | None = None, recorded: list[Registration] | None = None,
                ) -> StackSnapshot:
    """Run the Pulumi program for `stack` (or another `main`) under mocks; return what it registered and exported.

    `recorded`, when given, receives the registrations as they happen, so a caller can see what was
    declared before a failure.
    """
    from infra import program

    main = main or program.main
    config = config if config is not None else stack_config(stack, overrides)
    mocks = GcpMocks(project=config.get("gcp:project", "unset-project"))
    monitor = RecordingMonitor(mocks)
    if recorded is not None:
        monitor.registrations = recorded
    # Pulumi's runtime runs on the current event loop; each build gets a fresh one (another test's
    # asyncio.run leaves none set).
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi.runtime.settings.ROOT.set(None)  # a fresh root stack for every build
    pulumi.runtime.set_mocks(mocks, project=PROJECT_NAME, stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(config)
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test
    def run() -> pulumi.Output[Any]:
        main()
        root = pulumi.runtime.get_root_resource()
        assert root is not None
        return pulumi.Output.all(**root.outputs).apply(outputs.update)  # type: ignore[attr-defined]

    try:
        with _in_program_directory():
            run()
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return StackSnapshot(resources=monitor.registrations, outputs=outputs)

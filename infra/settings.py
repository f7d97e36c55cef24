"""The stack's settings: read once from Pulumi config, validated before any resource is declared.

`load_settings()` turns stack config into a `PipelineSettings`; constructing a `PipelineSettings`
(directly, or with `dataclasses.replace` for a second pipeline) validates every field and raises
`SettingsError` listing every problem at once, each naming the config key, the value given and
what is allowed. The rest of the program never re-checks.

Defaults live in `Pulumi.yaml` (the CLI applies them), so this module has none of its own.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from infra import limits
from tasklane.core.retry import RetryPolicy  # the one implementation of Cloud Tasks' backoff formula
from tasklane.core.token_check import TokenCheck

if TYPE_CHECKING:
    pass

PROJECT_NAMESPACE = "tasklane"

# Config key (as written in Pulumi.<stack>.yaml) for each settings field.
CONFIG_KEYS: dict[str, str] = {
    "project": "gcp:project",
    "region": "gcp:region",
    "name": "tasklane:name",
    "ingress": "tasklane:ingress",
    "custom_audience": "tasklane:customAudience",
    "token_check": "tasklane:tokenCheck",
    "task_dispatch_deadline_seconds": "tasklane:taskDispatchDeadline",
    "request_timeout_seconds": "tasklane:requestTimeout",
    "container_concurrency": "tasklane:containerConcurrency",
    "min_instances": "tasklane:minInstances",
    "max_instances": "tasklane:maxInstances",
    "cpu": "tasklane:cpu",
    "memory": "tasklane:memory",
    "cpu_always_allocated": "tasklane:cpuAlwaysAllocated",
    "deletion_protection": "tasklane:deletionProtection",
    "firestore_database": "tasklane:firestoreDatabase",
    "firestore_location": "tasklane:firestoreLocation",
    "firestore_point_in_time_recovery": "tasklane:firestorePointInTimeRecovery",
    "firestore_delete_protection": "tasklane:firestoreDeleteProtection",
    "image_keep_count": "tasklane:imageKeepCount",
    "max_dispatches_per_second": "tasklane:maxDispatchesPerSecond",
    "max_concurrent_dispatches": "tasklane:maxConcurrentDispatches",
    "max_attempts": "tasklane:maxAttempts",
    "min_backoff_seconds": "tasklane:minBackoff",
    "max_backoff_seconds": "tasklane:maxBackoff",
    "max_doublings": "tasklane:maxDoublings",
    "max_retry_duration_seconds": "tasklane:maxRetryDuration",
    "logging_sampling_ratio": "tasklane:loggingSamplingRatio",
    "producer_members": "tasklane:producerMembers",
    "alert_emails": "tasklane:alertEmails",
    "alert_channels": "tasklane:alertChannels",
    "backlog_alert_depth": "tasklane:backlogAlertDepth",
    "backlog_alert_minutes": "tasklane:backlogAlertMinutes",
    "error_ratio_alert": "tasklane:errorRatioAlert",
}

# Ingress config values and the Cloud Run v2 enum each stands for.
INGRESS_VALUES: dict[str, str] = {
    "internal": "INGRESS_TRAFFIC_INTERNAL_ONLY",
    "internal-and-cloud-load-balancing": "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER",
    "all": "INGRESS_TRAFFIC_ALL",
}

TOKEN_CHECKS = tuple(check.value for check in TokenCheck)

PUBLIC_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})
_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
_MEMBER_PATTERNS = (
    re.compile(rf"^serviceAccount:{_EMAIL}$"),
    re.compile(rf"^user:{_EMAIL}$"),
    re.compile(rf"^group:{_EMAIL}$"),
    re.compile(r"^principal://iam\.googleapis\.com/\S+$"),
    re.compile(r"^principalSet://iam\.googleapis\.com/\S+$"),
)
ALLOWED_MEMBER_FORMS = (
    "serviceAccount:EMAIL, user:EMAIL, group:EMAIL, "
    "principal://iam.googleapis.com/… or principalSet://iam.googleapis.com/…"
)

_NAME = re.compile(r"^[a-z][a-z0-9-]{2,20}[a-z0-9]$")
_FIRESTORE_DATABASE = re.compile(r"^[a-z][a-z0-9-]{2,61}[a-z0-9]$")
_FIRESTORE_LOCATION = re.compile(r"^(?:[a-z]+-[a-z]+[0-9]+|nam[0-9]+|eur[0-9]+)$")
_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_MEMORY = re.compile(r"^(\d+)(Mi|Gi)$")


class SettingsError(ValueError):
    """Stack config that cannot be deployed; `problems` has one message per bad value."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        listing = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"invalid stack configuration:\n{listing}")


def parse_duration(text: str) -> float:
    """Seconds in a duration written as a number and a unit: "600s", "10m", "0.1s", "1h", "500ms"."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration; write a number and a unit (ms, s, m, h), e.g. '600s' or '10m'")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    """The Google API form of a duration: "0.1s", "600s"; fixed-point to the nanosecond, never an exponent
    ("1e-05s" and "1e+09s" are not durations the API reads)."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def memory_mib(text: str) -> int:
    match = _MEMORY.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a memory size; write e.g. '512Mi' or '2Gi'")
    return int(match.group(1)) * (1024 if match.group(2) == "Gi" else 1)


@dataclass(frozen=True)
class PipelineSettings:
    """Everything one task pipeline (queue + service + identities) is built from."""

    project: str
    region: str
    name: str
    ingress: str
    custom_audience: str | None
    token_check: str
    task_dispatch_deadline_seconds: float
    request_timeout_seconds: float
    container_concurrency: int
    min_instances: int
    max_instances: int
    cpu: str
    memory: str
    cpu_always_allocated: bool
    deletion_protection: bool
    firestore_database: str | None
    firestore_location: str | None
    firestore_point_in_time_recovery: bool
    firestore_delete_protection: bool
    image_keep_count: int
    max_dispatches_per_second: float
    max_concurrent_dispatches: int
    max_attempts: int
    min_backoff_seconds: float
    max_backoff_seconds: float
    max_doublings: int
    max_retry_duration_seconds: float
    logging_sampling_ratio: float
    producer_members: tuple[str, ...]
    alert_emails: tuple[str, ...]
    alert_channels: tuple[str, ...]
    backlog_alert_depth: int
    backlog_alert_minutes: int
    error_ratio_alert: float

    def __post_init__(self) -> None:
        problems = validation_problems(self)
        if problems:
            raise SettingsError(problems)

    # Names derived from `name`, kept here so the 30-character service-account limit is checked once.
    @property
    def runtime_account_id(self) -> str:
        return f"{self.name}-runtime"

    @property
    def invoker_account_id(self) -> str:
        return f"{self.name}-invoker"

    @property
    def push_account_id(self) -> str:
        return f"{self.name}-push"

    @property
    def invoker_email(self) -> str:
        return f"{self.invoker_account_id}@{self.project}.iam.gserviceaccount.com"

    @property
    def local_queue_path(self) -> str:
        """The stack's queue in the local emulator: deployed queues are auto-named, locally it is `<name>-queue`."""
        return f"projects/{self.project}/locations/{self.region}/queues/{self.name}-queue"

    @property
    def firestore_database_id(self) -> str:
        """The pipeline's own Firestore database (never `(default)`, which other apps of the project may use)."""
        return self.firestore_database or f"{self.name}-db"

    @property
    def firestore_location_id(self) -> str:
        return self.firestore_location or self.region

    @property
    def repository_id(self) -> str:
        return f"{self.name}-images"

    @property
    def service_name(self) -> str:
        return self.name

    @property
    def ingress_enum(self) -> str:
        return INGRESS_VALUES[self.ingress]

    @property
    def retry_window_seconds(self) -> float:
        """The least time from a task's first attempt to Cloud Tasks giving it up, if every attempt fails at
        once: both limits must be spent, so it is the longer of the backoffs' sum and maxRetryDuration."""
        if self.max_attempts == limits.UNLIMITED_ATTEMPTS:
            return math.inf
        policy = RetryPolicy(max_attempts=self.max_attempts, max_retry_duration=self.max_retry_duration_seconds,
                             min_backoff=self.min_backoff_seconds, max_backoff=self.max_backoff_seconds,
                             max_doublings=self.max_doublings)
        backoffs = sum(policy.interval(failures) for failures in range(1, self.max_attempts))
        return max(backoffs, self.max_retry_duration_seconds)


DURATION_FIELDS = frozenset({
    "task_dispatch_deadline_seconds", "request_timeout_seconds", "min_backoff_seconds", "max_backoff_seconds",
    "max_retry_duration_seconds",
})


def _shown(field: str, value: object) -> str:
    """A value as the user wrote it in config: durations with their unit, numbers without a trailing .0."""
    if field in DURATION_FIELDS and isinstance(value, float):
        return repr(format_duration(value))
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


def _problem(field: str, value: object, allowed: str) -> str:
    return f"{CONFIG_KEYS[field]} = {_shown(field, value)}: {allowed}"


def validation_problems(s: PipelineSettings) -> list[str]:
    """Every reason `s` cannot be deployed; empty when it can."""
    problems: list[str] = []

    def check(ok: bool, field: str, allowed: str) -> None:
        if not ok:
            problems.append(_problem(field, getattr(s, field), allowed))

    check(bool(_PROJECT_ID.match(s.project)), "project",
          "must be a Google Cloud project ID (6-30 lowercase letters, digits or hyphens, starting with a letter)")
    check(bool(_REGION.match(s.region)), "region", "must be a Google Cloud region such as 'us-central1'")
    check(bool(_NAME.match(s.name)), "name",
          "must be 4-22 lowercase letters, digits or hyphens, starting with a letter and not ending with a hyphen "
          "(it prefixes service-account IDs, which are limited to 30 characters)")
    check(s.ingress in INGRESS_VALUES, "ingress", f"must be one of {', '.join(sorted(INGRESS_VALUES))}")
    check(s.token_check in TOKEN_CHECKS, "token_check", f"must be one of {', '.join(TOKEN_CHECKS)}")
    if s.custom_audience is not None:
        check(re.match(r"^https://[^\s?#]+$", s.custom_audience) is not None, "custom_audience",
              "must be an https:// URL without a query string or fragment (leave it empty to use the service URL)")

    deadline = s.task_dispatch_deadline_seconds
    check(limits.MIN_DISPATCH_DEADLINE_SECONDS <= deadline <= limits.MAX_DISPATCH_DEADLINE_SECONDS,
          "task_dispatch_deadline_seconds", "must be between 15s and 30m (Cloud Tasks HTTP task limits)")
    check(s.request_timeout_seconds <= limits.MAX_REQUEST_TIMEOUT_SECONDS, "request_timeout_seconds",
          "must be at most 3600s (Cloud Run's limit)")
    check(s.request_timeout_seconds >= deadline, "request_timeout_seconds",
          f"must be at least the task dispatch deadline ({format_duration(deadline)}), otherwise Cloud Run answers "
          "504 to slow tasks that are still running and Cloud Tasks retries them")

    check(1 <= s.container_concurrency <= limits.MAX_CONTAINER_CONCURRENCY, "container_concurrency",
          f"must be between 1 and {limits.MAX_CONTAINER_CONCURRENCY}")
    check(0 <= s.min_instances <= limits.MAX_INSTANCES, "min_instances",
          f"must be between 0 and {limits.MAX_INSTANCES}")
    check(1 <= s.max_instances <= limits.MAX_INSTANCES, "max_instances",
          f"must be between 1 and {limits.MAX_INSTANCES}")
    check(s.min_instances <= s.max_instances, "min_instances",
          f"must not exceed {CONFIG_KEYS['max_instances']} ({s.max_instances})")
    problems.extend(cloud_run_shape_problems(s))
    if s.firestore_database is not None:
        check(bool(_FIRESTORE_DATABASE.fullmatch(s.firestore_database)), "firestore_database",
              "must be 4-63 lowercase letters, digits or hyphens, starting with a letter and not ending with a "
              "hyphen (empty means '<name>-db'); '(default)' is left to other apps of the project")
    if s.firestore_location is not None:
        check(bool(_FIRESTORE_LOCATION.fullmatch(s.firestore_location)), "firestore_location",
              "must be a Firestore location: a region such as 'us-central1' or a multi-region such as 'nam5' or "
              "'eur3' (empty means gcp:region)")
    check(s.image_keep_count >= 1, "image_keep_count", "must be at least 1 (the deployed image is always kept)")

    check(0 < s.max_dispatches_per_second <= limits.MAX_DISPATCHES_PER_SECOND, "max_dispatches_per_second",
          f"must be greater than 0 and at most {limits.MAX_DISPATCHES_PER_SECOND:g} (Cloud Tasks' per-queue limit; "
          "use several queues to go faster)")
    check(1 <= s.max_concurrent_dispatches <= limits.MAX_CONCURRENT_DISPATCHES, "max_concurrent_dispatches",
          f"must be between 1 and {limits.MAX_CONCURRENT_DISPATCHES}")
    check(s.max_attempts == limits.UNLIMITED_ATTEMPTS or s.max_attempts >= 1, "max_attempts",
          "must be -1 (unlimited) or at least 1; 0 would silently become the service default of 100")
    check(s.min_backoff_seconds >= 0, "min_backoff_seconds", "must not be negative")
    check(s.max_backoff_seconds >= 0, "max_backoff_seconds", "must not be negative")
    check(s.min_backoff_seconds <= s.max_backoff_seconds, "min_backoff_seconds",
          f"must not exceed {CONFIG_KEYS['max_backoff_seconds']} ({format_duration(s.max_backoff_seconds)})")
    check(s.max_doublings >= 0, "max_doublings", "must not be negative")
    check(s.max_retry_duration_seconds >= 0, "max_retry_duration_seconds",
          "must not be negative (0 means no time limit)")
    check(0.0 <= s.logging_sampling_ratio <= 1.0, "logging_sampling_ratio", "must be between 0.0 and 1.0")

    for index, email in enumerate(s.alert_emails):
        if not re.fullmatch(_EMAIL, email):
            problems.append(f"{CONFIG_KEYS['alert_emails']}[{index}] = {email!r}: is not an email address")
    for index, channel in enumerate(s.alert_channels):
        if not re.fullmatch(r"projects/[^/\s]+/notificationChannels/\d+", channel):
            problems.append(f"{CONFIG_KEYS['alert_channels']}[{index}] = {channel!r}: must be a notification "
                            "channel's name, projects/PROJECT/notificationChannels/ID "
                            "(`gcloud beta monitoring channels list`)")
    check(s.backlog_alert_depth >= 1, "backlog_alert_depth", "must be at least 1 task")
    check(1 <= s.backlog_alert_minutes <= 1440, "backlog_alert_minutes", "must be between 1 and 1440 minutes")
    check(0 < s.error_ratio_alert < 1, "error_ratio_alert",
          "must be a fraction of requests above 0 and below 1, e.g. 0.05 for 5 %")
    for index, member in enumerate(s.producer_members):
        key = f"{CONFIG_KEYS['producer_members']}[{index}] = {member!r}"
        if member in PUBLIC_MEMBERS:
            problems.append(f"{key}: public principals are refused; list the producers' own identities "
                            f"({ALLOWED_MEMBER_FORMS})")
        elif not any(pattern.match(member) for pattern in _MEMBER_PATTERNS):
            problems.append(f"{key}: is not an IAM member; allowed forms: {ALLOWED_MEMBER_FORMS}")
    return problems


def retry_window_warning(s: PipelineSettings) -> str | None:
    """Why a stack whose tasks are given up sooner than a new IAM grant propagates may lose tasks."""
    if s.retry_window_seconds >= limits.IAM_PROPAGATION_SECONDS:
        return None
    return (f"tasks are given up {s.retry_window_seconds:.0f}s after their first attempt when every attempt fails "
            f"({CONFIG_KEYS['max_attempts']} = {s.max_attempts}, {CONFIG_KEYS['max_backoff_seconds']} = "
            f"{format_duration(s.max_backoff_seconds)}, {CONFIG_KEYS['max_retry_duration_seconds']} = "
            f"{format_duration(s.max_retry_duration_seconds)}); a new IAM grant can take "
            f"{limits.IAM_PROPAGATION_SECONDS / 60:.0f} minutes to reach Cloud Run, so tasks sent right after a "
            "deploy may be refused with 403 until they are given up. Raise maxAttempts or maxRetryDuration.")


def cpu_count(text: str) -> float:
    """CPUs in a Cloud Run CPU limit: a whole choice ("1", "2", "4", "6", "8") or a fraction such as "0.5"."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a CPU count; write e.g. '1', '2' or '0.5'") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a CPU count; write e.g. '1', '2' or '0.5'")
    return value


def cloud_run_shape_problems(s: PipelineSettings) -> list[str]:
    """Combinations of CPU, memory, concurrency and CPU allocation that Cloud Run refuses to deploy."""
    cpu_key, memory_key = CONFIG_KEYS["cpu"], CONFIG_KEYS["memory"]
    whole = ", ".join(str(count) for count in limits.MAX_MEMORY_MIB_BY_CPU)
    try:
        cpu = cpu_count(s.cpu)
    except ValueError as error:
        return [f"{cpu_key}: {error}; allowed: {whole}, or {limits.MIN_FRACTIONAL_CPU:g} to 0.999 in steps of "
                f"{limits.FRACTIONAL_CPU_STEP:g}"]
    try:
        mib = memory_mib(s.memory)
    except ValueError as error:
        return [f"{memory_key}: {error}"]
    fractional = cpu < 1
    steps = cpu / limits.FRACTIONAL_CPU_STEP
    if fractional and not (cpu >= limits.MIN_FRACTIONAL_CPU and abs(steps - round(steps)) < 1e-9):
        return [f"{cpu_key} = {s.cpu!r}: below 1 CPU Cloud Run takes {limits.MIN_FRACTIONAL_CPU:g} to 0.999 in steps "
                f"of {limits.FRACTIONAL_CPU_STEP:g}; otherwise one of {whole}"]
    if not fractional and cpu not in limits.MAX_MEMORY_MIB_BY_CPU:
        return [f"{cpu_key} = {s.cpu!r}: must be one of {whole}, or a fraction from {limits.MIN_FRACTIONAL_CPU:g} to "
                "0.999"]

    problems: list[str] = []
    if fractional:
        least = limits.MIN_MEMORY_MIB
        most = limits.MAX_MEMORY_MIB_BELOW_HALF_CPU if cpu < 0.5 else limits.MAX_MEMORY_MIB_BELOW_ONE_CPU
    else:
        least, most = limits.MIN_MEMORY_MIB_BY_CPU[int(cpu)], limits.MAX_MEMORY_MIB_BY_CPU[int(cpu)]
    if not least <= mib <= most:
        problems.append(f"{memory_key} = {s.memory!r} with {cpu_key} = {s.cpu!r}: Cloud Run needs between {least}Mi "
                        f"and {most}Mi at {s.cpu} CPU; change the memory, or the CPU "
                        f"({_cpu_choices_for(mib)} allow {s.memory})")
    if fractional and s.container_concurrency > limits.FRACTIONAL_CPU_MAX_CONCURRENCY:
        problems.append(f"{CONFIG_KEYS['container_concurrency']} = {s.container_concurrency} with {cpu_key} = "
                        f"{s.cpu!r}: below 1 CPU an instance serves one request at a time; set it to 1 or use "
                        "at least 1 CPU")
    if fractional and s.cpu_always_allocated:
        problems.append(f"{CONFIG_KEYS['cpu_always_allocated']} = true with {cpu_key} = {s.cpu!r}: CPU that stays "
                        "allocated outside requests needs at least 1 CPU; set it to false or use at least 1 CPU")
    return problems


def _cpu_choices_for(mib: int) -> str:
    choices = [str(cpu) for cpu in limits.MAX_MEMORY_MIB_BY_CPU
               if limits.MIN_MEMORY_MIB_BY_CPU[cpu] <= mib <= limits.MAX_MEMORY_MIB_BY_CPU[cpu]]
    return "CPU " + ", ".join(choices) if choices else "no CPU choice"


T = TypeVar("T")


class ConfigSource(Protocol):
    """What settings are read from: `pulumi.Config`, or `StackFileConfig` outside a Pulumi run."""

    def get(self, key: str) -> str | None: ...


def load_settings(config: ConfigSource | None = None, gcp_config: ConfigSource | None = None) -> PipelineSettings:
    """Read the stack's config into validated settings, reporting every bad value at once."""
    if config is None or gcp_config is None:
        import pulumi  # only inside a Pulumi run; the emulator reads stack files without it

        config = config or pulumi.Config(PROJECT_NAMESPACE)
        gcp_config = gcp_config or pulumi.Config("gcp")
    problems: list[str] = []
    values: dict[str, Any] = {}

    def read(field: str, parse: Callable[[str], T]) -> None:
        namespace, key = CONFIG_KEYS[field].split(":")
        raw = (gcp_config if namespace == "gcp" else config).get(key)
        if raw is None:
            problems.append(f"{CONFIG_KEYS[field]} is not set; set it with "
                            f"`pulumi config set {CONFIG_KEYS[field]} <value>`")
            return
        try:
            values[field] = parse(raw)
        except (ValueError, TypeError) as error:
            problems.append(f"{CONFIG_KEYS[field]} = {raw!r}: {error}")

    for field in ("project", "region", "name", "ingress", "token_check", "cpu", "memory"):
        read(field, str)
    read("custom_audience", lambda text: text or None)
    for field in ("task_dispatch_deadline_seconds", "request_timeout_seconds", "min_backoff_seconds",
                  "max_backoff_seconds", "max_retry_duration_seconds"):
        read(field, parse_duration)
    for field in ("container_concurrency", "min_instances", "max_instances", "image_keep_count",
                  "max_concurrent_dispatches", "max_attempts", "max_doublings"):
        read(field, _parse_int)
    for field in ("max_dispatches_per_second", "logging_sampling_ratio"):
        read(field, _parse_number)
    read("deletion_protection", _parse_bool)
    read("firestore_database", lambda text: text or None)
    read("firestore_location", lambda text: text or None)
    read("firestore_point_in_time_recovery", _parse_bool)
    read("firestore_delete_protection", _parse_bool)
    read("cpu_always_allocated", _parse_bool)
    read("producer_members", _parse_members)
    read("alert_emails", _parse_members)
    read("alert_channels", _parse_members)
    read("backlog_alert_depth", _parse_int)
    read("backlog_alert_minutes", _parse_int)
    read("error_ratio_alert", _parse_number)

    if problems:
        raise SettingsError(problems)
    return PipelineSettings(**values)


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be a whole number") from None


def _parse_number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("must be a number") from None


def _parse_bool(text: str) -> bool:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise ValueError("must be true or false")


def _parse_members(text: str) -> tuple[str, ...]:
    try:
        members = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("must be a list of IAM members") from None
    if not isinstance(members, list) or not all(isinstance(member, str) for member in members):
        raise ValueError("must be a list of IAM members (strings)")
    return tuple(members)


SETTINGS_FIELDS = tuple(field.name for field in fields(PipelineSettings))


class StackFileConfig:
    """One namespace of a stack's config as the Pulumi CLI would hand it over: the stack file's values
    over the defaults declared in Pulumi.yaml, as strings (lists as JSON)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def get(self, key: str) -> str | None:
        value = self._values.get(key)
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        return json.dumps(value) if isinstance(value, list | dict) else str(value)


def settings_from_stack_files(stack: str, project_dir: Path) -> PipelineSettings:
    """The settings `pulumi up` would use for `stack`, read from Pulumi.yaml and Pulumi.<stack>.yaml."""
    import yaml

    project = yaml.safe_load((project_dir / "Pulumi.yaml").read_text())
    stack_file = project_dir / f"Pulumi.{stack}.yaml"
    if not stack_file.exists():
        raise SettingsError([f"no stack file {stack_file.name} in {project_dir}"])
    values = (yaml.safe_load(stack_file.read_text()) or {}).get("config", {})
    namespaces: dict[str, dict[str, Any]] = {PROJECT_NAMESPACE: {}, "gcp": {}}
    for key, declared in project.get("config", {}).items():
        if "default" in declared:
            namespaces[PROJECT_NAMESPACE][key] = declared["default"]
    for full_key, value in values.items():
        namespace, _, key = full_key.partition(":")
        namespaces.setdefault(namespace, {})[key] = value
    return load_settings(StackFileConfig(namespaces[PROJECT_NAMESPACE]), StackFileConfig(namespaces["gcp"]))

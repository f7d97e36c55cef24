"""Stack config is refused before any resource is declared, with a message naming key, value and what is allowed."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from infra.settings import SettingsError, format_duration, load_settings, parse_duration
from tests.infra.harness import ConfigTypeError, Registration, build_stack, stack_config

# (config overrides on the dev stack, the fragments the message must contain)
INVALID: dict[str, tuple[dict[str, Any], list[str]]] = {
    "rate above 500": ({"tasklane:maxDispatchesPerSecond": "800"},
                       ["tasklane:maxDispatchesPerSecond = 800", "at most 500"]),
    "rate zero": ({"tasklane:maxDispatchesPerSecond": "0"},
                  ["tasklane:maxDispatchesPerSecond = 0", "greater than 0"]),
    "concurrency above 5000": ({"tasklane:maxConcurrentDispatches": 6000},
                               ["tasklane:maxConcurrentDispatches = 6000", "between 1 and 5000"]),
    "min backoff above max backoff": ({"tasklane:minBackoff": "100s", "tasklane:maxBackoff": "60s"},
                                      ["tasklane:minBackoff = '100s'", "must not exceed tasklane:maxBackoff (60s)"]),
    "negative backoff": ({"tasklane:minBackoff": "-1s"}, ["tasklane:minBackoff = '-1s'", "not a duration"]),
    "negative doublings": ({"tasklane:maxDoublings": -1}, ["tasklane:maxDoublings = -1", "must not be negative"]),
    "max attempts below -1": ({"tasklane:maxAttempts": -2},
                              ["tasklane:maxAttempts = -2", "-1 (unlimited) or at least 1"]),
    "max attempts zero": ({"tasklane:maxAttempts": 0}, ["tasklane:maxAttempts = 0", "service default"]),
    "deadline under 15s": ({"tasklane:taskDispatchDeadline": "10s"},
                           ["tasklane:taskDispatchDeadline = '10s'", "between 15s and 30m"]),
    "deadline over 30m": ({"tasklane:taskDispatchDeadline": "31m", "tasklane:requestTimeout": "3600s"},
                          ["tasklane:taskDispatchDeadline = '1860s'", "between 15s and 30m"]),
    "timeout below deadline": ({"tasklane:taskDispatchDeadline": "600s", "tasklane:requestTimeout": "300s"},
                               ["tasklane:requestTimeout = '300s'", "at least the task dispatch deadline (600s)"]),
    "timeout above an hour": ({"tasklane:requestTimeout": "2h"},
                              ["tasklane:requestTimeout = '7200s'", "at most 3600s"]),
    "min instances above max": ({"tasklane:minInstances": 5, "tasklane:maxInstances": 3},
                                ["tasklane:minInstances = 5", "must not exceed tasklane:maxInstances (3)"]),
    "public producer": ({"tasklane:producerMembers": ["allUsers"]},
                        ["tasklane:producerMembers[0] = 'allUsers'", "public principals are refused"]),
    "all authenticated producer": ({"tasklane:producerMembers": ["serviceAccount:a@b.iam.gserviceaccount.com",
                                                                 "allAuthenticatedUsers"]},
                                   ["tasklane:producerMembers[1] = 'allAuthenticatedUsers'", "public"]),
    "member without a kind": ({"tasklane:producerMembers": ["bob@example.com"]},
                              ["tasklane:producerMembers[0] = 'bob@example.com'", "is not an IAM member",
                               "serviceAccount:EMAIL"]),
    "member with a malformed email": ({"tasklane:producerMembers": ["serviceAccount:not-an-email"]},
                                      ["tasklane:producerMembers[0] = 'serviceAccount:not-an-email'"]),
    "unknown ingress": ({"tasklane:ingress": "public"},
                        ["tasklane:ingress = 'public'", "all, internal, internal-and-cloud-load-balancing"]),
    "unknown token check": ({"tasklane:tokenCheck": "strict"},
                            ["tasklane:tokenCheck = 'strict'", "one of off, claims, full"]),
    "audience with a query": ({"tasklane:customAudience": "https://svc.example.com/?x=1"},
                              ["tasklane:customAudience", "without a query string"]),
    "cpu not offered": ({"tasklane:cpu": "3"}, ["tasklane:cpu = '3'", "one of 1, 2, 4, 6, 8"]),
    "cpu not a number": ({"tasklane:cpu": "lots"}, ["tasklane:cpu", "'lots' is not a CPU count"]),
    "cpu infinite": ({"tasklane:cpu": "inf"}, ["tasklane:cpu", "'inf' is not a CPU count"]),
    "cpu fraction too small": ({"tasklane:cpu": "0.05", "tasklane:containerConcurrency": 1},
                               ["tasklane:cpu = '0.05'", "0.08 to 0.999 in steps of 0.001"]),
    "cpu fraction off the step": ({"tasklane:cpu": "0.2555", "tasklane:containerConcurrency": 1},
                                  ["tasklane:cpu = '0.2555'", "steps of 0.001"]),
    "memory malformed": ({"tasklane:memory": "lots"}, ["tasklane:memory", "'lots' is not a memory size"]),
    "memory too large for the cpu": ({"tasklane:memory": "8Gi"},
                                     ["tasklane:memory = '8Gi' with tasklane:cpu = '1'", "between 128Mi and 4096Mi",
                                      "CPU 2, 4, 6, 8 allow 8Gi"]),
    "4 cpu with too little memory": ({"tasklane:cpu": "4", "tasklane:memory": "512Mi"},
                                     ["tasklane:memory = '512Mi' with tasklane:cpu = '4'", "between 2048Mi and 16384Mi",
                                      "CPU 1, 2 allow 512Mi"]),
    "8 cpu with 2 GiB": ({"tasklane:cpu": "8", "tasklane:memory": "2Gi"},
                         ["tasklane:memory = '2Gi' with tasklane:cpu = '8'", "between 4096Mi and 32768Mi"]),
    "memory below the floor": ({"tasklane:memory": "64Mi"}, ["tasklane:memory = '64Mi'", "between 128Mi"]),
    "fractional cpu with concurrency": ({"tasklane:cpu": "0.5"},
                                        ["tasklane:containerConcurrency = 80 with tasklane:cpu = '0.5'",
                                         "one request at a time; set it to 1"]),
    "fractional cpu always allocated": ({"tasklane:cpu": "0.5", "tasklane:containerConcurrency": 1,
                                         "tasklane:cpuAlwaysAllocated": True},
                                        ["tasklane:cpuAlwaysAllocated = true with tasklane:cpu = '0.5'",
                                         "at least 1 CPU"]),
    "fractional cpu with too much memory": ({"tasklane:cpu": "0.25", "tasklane:containerConcurrency": 1,
                                             "tasklane:memory": "1Gi"},
                                            ["tasklane:memory = '1Gi' with tasklane:cpu = '0.25'",
                                             "between 128Mi and 512Mi"]),
    "concurrency above 1000": ({"tasklane:containerConcurrency": 1001},
                               ["tasklane:containerConcurrency = 1001", "between 1 and 1000"]),
    "max instances above 1000": ({"tasklane:maxInstances": 1001},
                                 ["tasklane:maxInstances = 1001", "between 1 and 1000"]),
    "max instances zero": ({"tasklane:maxInstances": 0, "tasklane:minInstances": 0},
                           ["tasklane:maxInstances = 0", "between 1 and 1000"]),
    "negative min instances": ({"tasklane:minInstances": -1}, ["tasklane:minInstances = -1", "between 0 and 1000"]),
    "sampling ratio above one": ({"tasklane:loggingSamplingRatio": "1.5"},
                                 ["tasklane:loggingSamplingRatio = 1.5", "between 0.0 and 1.0"]),
    "name with capitals": ({"tasklane:name": "Tasklane_Dev"}, ["tasklane:name = 'Tasklane_Dev'", "4-22 lowercase"]),
    "name too long for account IDs": ({"tasklane:name": "a" * 23}, ["tasklane:name", "30 characters"]),
    "image keep count zero": ({"tasklane:imageKeepCount": 0}, ["tasklane:imageKeepCount = 0", "at least 1"]),
    "project ID malformed": ({"gcp:project": "My Project"}, ["gcp:project = 'My Project'", "project ID"]),
}


@pytest.mark.parametrize("overrides, fragments", INVALID.values(), ids=INVALID.keys())
def test_invalid_config_is_refused_before_any_resource_with_a_clear_message(
        overrides: dict[str, Any], fragments: list[str]) -> None:
    declared: list[Registration] = []
    with pytest.raises(SettingsError) as refusal:
        build_stack("dev", overrides=overrides, recorded=declared)
    message = str(refusal.value)
    for fragment in fragments:
        assert fragment in message
    assert [r.type for r in declared] == [], "nothing may be declared from invalid settings"


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as refusal:
        build_stack("dev", overrides={"tasklane:maxDispatchesPerSecond": "800", "tasklane:maxDoublings": -3,
                                      "tasklane:producerMembers": ["allUsers"]})
    assert len(refusal.value.problems) == 3


def test_values_of_the_wrong_kind_are_named_by_the_program_too() -> None:
    """The CLI type-checks declared keys; the program still refuses values it cannot read, naming them."""
    config = stack_config("dev")
    config.update({"tasklane:maxAttempts": "ten", "tasklane:deletionProtection": "maybe",
                   "tasklane:minBackoff": "soon", "tasklane:producerMembers": '{"a": 1}'})
    with pytest.raises(SettingsError) as refusal:
        build_stack("dev", config=config)
    message = str(refusal.value)
    assert "tasklane:maxAttempts = 'ten': must be a whole number" in message
    assert "tasklane:deletionProtection = 'maybe': must be true or false" in message
    assert "tasklane:minBackoff = 'soon': 'soon' is not a duration" in message
    assert "tasklane:producerMembers" in message and "must be a list of IAM members" in message


def test_a_missing_project_is_named_with_the_command_that_sets_it() -> None:
    config = stack_config("dev")
    del config["gcp:project"]
    with pytest.raises(SettingsError, match=r"gcp:project is not set; set it with `pulumi config set gcp:project"):
        build_stack("dev", config=config)


def test_stack_files_are_checked_against_the_declared_types_like_the_cli_does() -> None:
    with pytest.raises(ConfigTypeError, match="maxAttempts' must be of type 'integer'"):
        stack_config("dev", {"tasklane:maxAttempts": "ten"})
    with pytest.raises(ConfigTypeError, match="not declared in Pulumi.yaml"):
        stack_config("dev", {"tasklane:maxAtempts": 3})


def test_a_second_pipelines_settings_are_validated_too() -> None:
    build_stack("dev", main=lambda: None)  # config in place for load_settings
    settings = load_settings()
    with pytest.raises(SettingsError, match="tasklane:maxConcurrentDispatches = 9000"):
        dataclasses.replace(settings, max_concurrent_dispatches=9000)


@pytest.mark.parametrize("text, seconds", [("600s", 600), ("10m", 600), ("0.1s", 0.1), ("1h", 3600),
                                           ("500ms", 0.5), ("0s", 0)])
def test_durations_read_as_written(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("seconds, text", [(0.1, "0.1s"), (600, "600s"), (0, "0s"), (1.5, "1.5s")])
def test_durations_are_given_to_google_in_seconds(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("overrides", [
    {"tasklane:cpu": "0.5", "tasklane:containerConcurrency": 1, "tasklane:memory": "1Gi"},
    {"tasklane:cpu": "0.08", "tasklane:containerConcurrency": 1, "tasklane:memory": "128Mi"},
    {"tasklane:cpu": "4", "tasklane:memory": "2Gi", "tasklane:cpuAlwaysAllocated": True},
    {"tasklane:cpu": "8", "tasklane:memory": "32Gi"},
    {"tasklane:containerConcurrency": 1000, "tasklane:maxInstances": 1000, "tasklane:requestTimeout": "3600s"},
], ids=["half cpu", "smallest fraction", "4 cpu always allocated", "largest", "upper bounds"])
def test_shapes_cloud_run_accepts_are_accepted(overrides: dict[str, Any]) -> None:
    snap = build_stack("dev", overrides=overrides)
    [service] = [r for r in snap.resources if r.type == "gcp:cloudrunv2/service:Service"]
    resources = service.inputs["template"]["containers"][0]["resources"]
    assert resources["cpuIdle"] is not overrides.get("tasklane:cpuAlwaysAllocated", False)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_committed_stacks_keep_retrying_longer_than_iam_takes_to_propagate(stack: str) -> None:
    """A task sent right after a first deploy meets 403 until the new grants reach Cloud Run (up to 7 minutes
    or more); it must still be retrying then, or it is given up unseen."""
    from infra import limits
    from infra.settings import retry_window_warning

    build_stack(stack, main=lambda: None)  # config in place for load_settings
    settings = load_settings()
    assert settings.retry_window_seconds >= limits.IAM_PROPAGATION_SECONDS == 600
    assert retry_window_warning(settings) is None


def test_a_stack_that_gives_up_sooner_is_warned_with_the_keys_to_change() -> None:
    from infra.settings import retry_window_warning

    build_stack("dev", main=lambda: None)
    settings = dataclasses.replace(load_settings(), max_attempts=5, max_backoff_seconds=60, max_doublings=3)
    assert settings.retry_window_seconds == 1 + 2 + 4 + 8
    warning = retry_window_warning(settings)
    assert warning is not None
    assert "given up 15s after their first attempt" in warning and "tasklane:maxAttempts = 5" in warning
    # Either limit long enough is enough: both must be spent before a task is given up.
    assert retry_window_warning(dataclasses.replace(settings, max_retry_duration_seconds=900)) is None
    assert retry_window_warning(dataclasses.replace(settings, max_attempts=-1)) is None


@pytest.mark.parametrize(("seconds", "text"), [
    (600, "600s"), (0.1, "0.1s"), (0, "0s"), (0.00001, "0.00001s"), (1e9, "1000000000s"), (1.44e9, "1440000000s"),
    (0.123456789, "0.123456789s"), (1800.5, "1800.5s")])
def test_durations_are_written_in_fixed_point_as_the_api_reads_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text

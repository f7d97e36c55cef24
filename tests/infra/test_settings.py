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
    "memory malformed": ({"tasklane:memory": "lots"}, ["tasklane:memory", "'lots' is not a memory size"]),
    "memory too large for the cpu": ({"tasklane:memory": "8Gi"},
                                     ["tasklane:memory = '8Gi'", "between 128Mi and 4096Mi for cpu '1'"]),
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

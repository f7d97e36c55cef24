"""Pulumi.yaml, the settings loader and the README's config table describe the same keys and defaults."""

from __future__ import annotations

import re

from infra.settings import CONFIG_KEYS, SETTINGS_FIELDS
from tests.infra.harness import PROJECT_FILE, PROJECT_NAME, REPO

DECLARED = {f"{PROJECT_NAME}:{key}": spec for key, spec in PROJECT_FILE["config"].items()}


def readme_config_rows() -> dict[str, tuple[str, str]]:
    rows = re.findall(r"^\| `([a-z]+:[A-Za-z]+)` \| ([^|]+) \| ([^|]+) \|", (REPO / "README.md").read_text(), re.M)
    return {key: (kind.strip(), default.strip()) for key, kind, default in rows}


def test_every_settings_field_reads_one_config_key() -> None:
    assert set(CONFIG_KEYS) == set(SETTINGS_FIELDS)


def test_the_loader_reads_exactly_the_keys_pulumi_yaml_declares() -> None:
    project_keys = {key for key in CONFIG_KEYS.values() if key.startswith(f"{PROJECT_NAME}:")}
    assert project_keys == set(DECLARED)


def test_every_declared_key_has_a_description() -> None:
    for key, spec in DECLARED.items():
        assert spec.get("description", "").strip(), key


def test_the_readme_documents_every_key_with_its_default() -> None:
    rows = readme_config_rows()
    assert set(rows) == set(CONFIG_KEYS.values())
    for key, spec in DECLARED.items():
        _, documented = rows[key]
        if "default" not in spec:
            assert "required" in documented, key
            continue
        default = spec["default"]
        expected = {True: "`true`", False: "`false`"}.get(default) if isinstance(default, bool) else (
            "`[]`" if default == [] else '`""`' if default == "" else f"`{default}`")
        assert documented == expected, f"README says {documented} for {key}, Pulumi.yaml says {expected}"

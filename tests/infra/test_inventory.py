"""Each committed stack matches its committed inventory, so a change to the stack shows up as a readable diff."""

from __future__ import annotations

import difflib
import os

import pytest

from tests.infra.harness import build_stack, stack_names
from tests.infra.inventory import path_for, render


@pytest.mark.parametrize("stack", stack_names())
def test_stack_matches_its_inventory(stack: str) -> None:
    actual = render(build_stack(stack))
    path = path_for(stack)
    if os.environ.get("UPDATE_INVENTORY") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual)
    expected = path.read_text() if path.exists() else ""
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            f"{path.name} (committed)", f"{path.name} (built)"))
        pytest.fail(f"the {stack} stack differs from its inventory; if intended, run "
                    f"`UPDATE_INVENTORY=1 make test` and commit it:\n{diff}")

"""The README's Layout table names every folder of the checkout and every test folder, so none is a surprise."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Folders that hold no code of ours: git's, and generated or installed ones (never committed).
NOT_LISTED = {".git", ".ci"}


def layout_paths() -> set[str]:
    text = (REPO / "README.md").read_text()
    table = text[text.index("## Layout"):]
    table = table[:table.find("\n## ", 1)] if "\n## " in table[1:] else table
    paths = set()
    for row in re.findall(r"^\| (.+?) \|", table, flags=re.MULTILINE):
        paths.update(path.rstrip("/") for path in re.findall(r"`([^`]+)`", row))
    return paths


def committed_folders() -> set[str]:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    top = {file.split("/")[0] for file in files if "/" in file}
    tests = {"/".join(file.split("/")[:2]) for file in files if file.startswith("tests/") and file.count("/") >= 2}
    workflows = {".github/workflows"} if any(file.startswith(".github/workflows/") for file in files) else set()
    return (top - NOT_LISTED - {".github"}) | tests | workflows


def test_the_layout_table_lists_every_folder_and_every_test_folder() -> None:
    listed = layout_paths()
    listed |= {path.split("/")[0] for path in listed if path.startswith("tests/")}  # its folders, row by row
    missing = committed_folders() - listed
    assert not missing, f"README's Layout table does not list: {', '.join(sorted(missing))}"

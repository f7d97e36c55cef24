"""`pulumi up` installs requirements.txt only (Pulumi.yaml's virtualenv), not the development requirements the
tests run with: the program must import with just the local packages requirements.txt names."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_infra_module_imports_with_only_what_requirements_txt_installs() -> None:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    local = [REPO / line.strip() / "src" for line in lines if line.strip().startswith("./")]
    assert local, "requirements.txt names no local package; the program needs tasklane-core at least"
    modules = sorted(f"infra.{module.name}" for module in pkgutil.iter_modules([str(REPO / "infra")])
                     if module.name != "__main__")  # __main__ runs the program itself
    # -S: no .pth files, so this checkout's editable installs (handler, emulator, ...) are not on the path; the
    # third-party packages are, through PYTHONPATH, whichever requirement file brought them.
    path = os.pathsep.join([str(REPO), *map(str, local), sysconfig.get_paths()["purelib"],
                            sysconfig.get_paths()["platlib"]])
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n" \
             "assert not [m for m in sys.modules if m.startswith(('tasklane.handler', 'tasklane.emulator'))]\n"
    result = subprocess.run([sys.executable, "-S", "-c", script, *modules], cwd="/", capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": path}, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]

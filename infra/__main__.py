"""Entry point `pulumi up` runs (Pulumi.yaml: `main: infra/`)."""

import sys
from pathlib import Path

# Pulumi runs this file as a script; put the repository root on the path so `infra` and `handler`
# import as packages, exactly as they do in the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.program import main  # noqa: E402

main()

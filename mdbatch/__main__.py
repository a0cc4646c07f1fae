"""`python -m mdbatch`: the CLI, with the stop signals handled from the first instant."""

import sys

from mdbatch.errors import Interrupted
from mdbatch.lifecycle import STOP

try:
    STOP.install()
    # The CLI's imports take a second; a walltime signal then is raised once they are done, here:
    # one line and exit 3 (the sbatch scripts requeue on it), not a traceback from inside an import.
    with STOP.deferred():
        from mdbatch.cli import main
except Interrupted as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(Interrupted.exit_code)

sys.exit(main())

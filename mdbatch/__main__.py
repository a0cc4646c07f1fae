"""`python -m mdbatch`: the CLI, with the stop signals handled from the first instant."""

from mdbatch.lifecycle import STOP

STOP.install()

import sys  # noqa: E402 - after the handlers, so a walltime signal during start-up is not lost

from mdbatch.cli import main  # noqa: E402

sys.exit(main())

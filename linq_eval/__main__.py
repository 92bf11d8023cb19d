"""``python -m linq_eval``: the ``linq-eval`` command, for launchers that start modules (``torchrun -m``,
``accelerate launch -m``)."""

import sys

from linq_eval.cli import main

sys.exit(main())

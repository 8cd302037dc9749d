"""``python -m metabench ...`` (and ``torchrun ... -m metabench train ...``): the ``metabench`` command."""

import sys

from metabench.cli import main

sys.exit(main())

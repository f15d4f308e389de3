"""``python -m perception.cli``: the same as the ``perception`` command."""

import sys

from perception.cli import main

sys.exit(main())

"""``python -m chorus.cli``: the ``chorus`` command."""

import sys

from chorus.cli.main import main

sys.exit(main())

"""``python -m streamkm``: the same entry point as the ``streamkm`` command."""

import sys

from streamkm.cli import main

sys.exit(main())

"""``python -m ep_server``: the same as the ``ep-server`` command."""

import sys

from ep_server.cli import main

sys.exit(main())

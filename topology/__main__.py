"""`python -m topology ...`: see topology.cli."""

import sys

from topology.cli import main

sys.exit(main())

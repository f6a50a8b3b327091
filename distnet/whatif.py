"""`python -m distnet.whatif`: project a profiled run onto a modelled cluster, or its goodput under
failures (`--failures`). The command lives in distnet/analysis/whatif.py; this is its entry point.

    python -m distnet.whatif --metrics run.jsonl --topology fat-tree:k=16 --plot scaling.png
"""

import sys

from distnet.analysis.whatif import main

if __name__ == "__main__":
    sys.exit(main())

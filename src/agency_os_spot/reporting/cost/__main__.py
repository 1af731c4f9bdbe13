"""`python -m agency_os_spot.reporting.cost`: the command line of cost.cli."""

import sys

from agency_os_spot.reporting.cost.cli import main

sys.exit(main())

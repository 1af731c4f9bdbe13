"""`python -m agency_os_spot.reporting.migration`: the command line of migration.cli."""

import sys

from agency_os_spot.reporting.migration.cli import main

sys.exit(main())

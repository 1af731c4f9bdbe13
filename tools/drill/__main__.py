import sys

from tools.drill.drill import main

sys.exit(main())

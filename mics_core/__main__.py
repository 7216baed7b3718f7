import sys

from mics_core.cli import main

sys.exit(main())

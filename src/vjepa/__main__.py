"""`python -m vjepa ...` (what torchrun launches) runs the command line."""

import sys

from vjepa.cli import main

sys.exit(main())

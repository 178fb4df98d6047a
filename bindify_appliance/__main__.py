"""`python -m bindify_appliance` runs the same CLI as the `bindify` script."""

import sys

from bindify_appliance.cli import main

sys.exit(main())

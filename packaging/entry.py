"""Entry script for the frozen executable: the same CLI as `bindify` from a checkout."""

from bindify_appliance.cli import main

raise SystemExit(main())

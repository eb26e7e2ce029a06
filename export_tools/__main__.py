"""``python -m export_tools``: the kpx command line."""

from export_tools.cli import main

raise SystemExit(main())

"""``python -m mailrouter.testing``: see ``mailrouter.testing.command``."""

from .command import main

raise SystemExit(main())

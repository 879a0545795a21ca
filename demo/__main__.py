"""``python -m demo``: the main job end to end on this machine, without Docker."""

from .cli import main

raise SystemExit(main())

"""`python -m compiler.cli`: the distillc command."""

from . import main

raise SystemExit(main())

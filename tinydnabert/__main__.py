"""`python -m tinydnabert COMMAND ...`: the same as the `tinydnabert` console command."""

import sys

from tinydnabert.app.cli import main

sys.exit(main())

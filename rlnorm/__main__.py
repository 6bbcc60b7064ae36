"""`python -m rlnorm ...` is the `rlnorm` command."""

import sys

from rlnorm.cli import main

sys.exit(main())

"""``python -m layer_analysis`` (what ``accelerate launch`` and ``torchrun`` run): the CLI."""

import sys

from layer_analysis.cli import main

sys.exit(main())

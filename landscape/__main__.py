"""``python -m landscape`` (also what ``torchrun -m landscape`` runs)."""

import sys

from .cli import main

sys.exit(main())

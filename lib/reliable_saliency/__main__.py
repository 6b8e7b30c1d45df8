"""``python -m reliable_saliency``: the book's command line (:mod:`.chapter.cli`)."""

import sys

from .chapter.cli import main

sys.exit(main())

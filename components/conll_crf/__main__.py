"""`python -m conll_crf annotate ...`: the `conll-crf` command line."""

import sys

from .cli import main

sys.exit(main())

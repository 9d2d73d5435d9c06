"""Convert CoNLL-2003 NER data to a spaCy DocBin: the package's `conll-crf convert`, for the project's steps.

    python scripts/convert.py SRC OUT.spacy [--docs article|sentence|N] [--split train]
        [--scheme auto|IOB|BILUO|IOBES] [--sep auto|tab|space] [--stats-json PATH]

See `conll-crf convert --help` (conll_crf/conll/convert.py).
"""

import sys

from conll_crf.conll.convert import main

if __name__ == "__main__":
    sys.exit(main())

"""BiLSTM-CRF named entity recognition for spaCy, with exact entity probabilities.

The package's rooms, one idea each:

- `conll_crf.crf`: a linear-chain CRF in pure PyTorch (no spaCy imports);
- `conll_crf.tags`: tag schemes: reading, writing, and what each scheme forbids;
- `conll_crf.pipeline`: the spaCy integration (the `crf_ner` component, its
  model and registered architectures), loaded through entry points (setup.cfg);
- `conll_crf.conll`: the CoNLL reader and conlleval;
- `conll_crf.annotate`: `conll-crf annotate`, resumable annotation of corpora;
- `conll_crf.process`: process-wide settings (threads, glibc's freed memory);
- `conll_crf.cli`: the `conll-crf` command line.
"""

__version__ = "0.6.0"

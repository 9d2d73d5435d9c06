"""BiLSTM-CRF named entity recognition for spaCy.

`conll_crf.crf` is pure PyTorch (no spaCy imports); the spaCy component and the
registered architecture are loaded through entry points (see setup.cfg).
"""
__version__ = "0.2.0"

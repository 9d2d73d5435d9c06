"""The spaCy integration: the `crf_ner` component and the model behind it.

- component.py: the `crf_ner` factory and `CRFEntityRecognizer`; scored_spans.py: `Span._.crf_prob`;
- architectures.py: the registered model architectures (current versions),
  legacy.py: the older versions, as shims over the same builders;
- head.py: the BiLSTM-CRF head as a torch module; thinc_head.py: its thinc
  wrapper and serialization;
- doc_constraints.py: what a Doc's whitespace, sentence boundaries and preset
  entities allow each token; length_groups.py: how a batch is split by length;
- word_dropout.py, augment.py, loggers.py: training helpers (registered);
- stable_mode.py: a callback that makes other components' torch layers (a
  transformer) predict without flipping train/eval mode, for thread pools.
"""

"""Training on the tokens an app sees: the raw-text augmenter.

CoNLL-2003 comes pre-tokenized, and the corpus keeps its tokens, so spaCy's
`Corpus` reader trains on the gold tokens. An app's text goes through spaCy's
tokenizer instead, which splits differently ("Chester-le-Street" -> 5 tokens,
"1996-08-30" -> 5). `conll_crf.raw_text_augmenter.v1` replaces a `level`
fraction of the training examples by the same text re-tokenized by the
pipeline's tokenizer, with the gold aligned onto the new tokens by characters
(spaCy's Example alignment; a gold tag that cannot be aligned, an entity edge
inside a token, is missing and the CRF marginalises over it). Works for any
component that trains from `Example.get_aligned_ner` (spaCy's `ner` too), so a
baseline can be given the same data.
"""

import random
from functools import partial
from typing import Callable, Iterator

from spacy.language import Language
from spacy.training import Example
from spacy.util import registry


@registry.augmenters("conll_crf.raw_text_augmenter.v1")
def create_raw_text_augmenter(level: float) -> Callable[[Language, Example], Iterator[Example]]:
    """`level`: the probability that an example is replaced by its raw-text
    version (0 keeps the data unchanged, 1 trains on raw text only). Draws from
    `random`, which spaCy seeds with the training seed."""
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"[raw_text_augmenter] level must be in [0, 1], got {level}")
    return partial(raw_text_augmenter, level=level)


def raw_text_augmenter(nlp: Language, example: Example, *, level: float) -> Iterator[Example]:
    """Yield `example`, or with probability `level` its raw-text version (`retokenized`)."""
    if level > 0.0 and random.random() < level:
        yield retokenized(nlp, example)
    else:
        yield example


def retokenized(nlp: Language, example: Example) -> Example:
    """The example's reference under the pipeline's own tokenizer."""
    reference = example.reference
    return Example(nlp.make_doc(reference.text), reference)

"""What training asks of each token: the tags its gold annotation admits (the
targets of the CRF's NLL), and the constraints it is trained under (those that
prediction would apply, with the gold's sentence starts where the predicted
Doc has none)."""

import random
from typing import Iterable, List, Sequence

import numpy
from spacy.training import Example

from ..tags import OUTSIDE, biluo_to_scheme
from .doc_constraints import TagIndex, doc_constraints


def gold_targets(examples: Iterable[Example], tags: Sequence[str], scheme: str) -> List[numpy.ndarray]:
    """Per example a [n_tokens, K] float32 0/1 array: the tags the gold
    annotation admits at each predicted token (all tags where it is missing).

    examples (Iterable[Example]): the batch.
    tags (Sequence[str]): the component's tags (`build_tags` order: O first).
    scheme (str): "BIO" or "BILUO".
    RETURNS (List[numpy.ndarray]): the targets. A gold label the tags do not
        know raises ValueError (it is never ignored silently)."""
    index = {t: i for i, t in enumerate(tags)}
    out = []
    for n, eg in enumerate(examples):
        aligned = biluo_to_scheme(eg.get_aligned_ner(), scheme)
        target = numpy.zeros((len(eg.predicted), len(tags)), dtype="float32")
        for i, tag in enumerate(aligned):
            if tag is None:
                target[i] = 1.0
            elif tag in index:
                target[i, index[tag]] = 1.0
            elif tag == OUTSIDE:
                target[i, 0] = 1.0
            else:
                labels = sorted({t.split("-", 1)[1] for t in tags if t != OUTSIDE})
                raise ValueError(
                    f"[crf_ner] a gold entity of example {n} has the label {tag.split('-', 1)[-1]!r}, which "
                    f"this component does not know (labels: {', '.join(labels)}); it is not ignored "
                    f"silently. Re-initialize the component with it (nlp.initialize) or leave it out of the data."
                )
        out.append(target)
    return out


def training_constraints(examples: Sequence[Example], index: TagIndex, sentence_dropout: float) -> List[numpy.ndarray]:
    """The constraints prediction would apply to each predicted doc; where
    the predicted doc has no sentence boundaries, the gold's (aligned) are
    used, so training sees the same constrained paths as decoding a
    sentence-split doc, except for a `sentence_dropout` fraction of them
    (drawn from `random`, which spaCy seeds), trained as unsplit text.
    Preset entities of the predicted doc count too."""
    out = []
    for eg in examples:
        starts = None
        if (
            not eg.predicted.has_annotation("SENT_START")
            and eg.reference.has_annotation("SENT_START")
            and (sentence_dropout == 0.0 or random.random() >= sentence_dropout)
        ):
            starts = numpy.array([0 if s is None else (1 if s else -1) for s in eg.get_aligned_sent_starts()])
        out.append(doc_constraints(eg.predicted, index, sent_starts=starts))
    return out

"""Document context: each token's vector next to the mean vector of every occurrence of its word in the document.

The same string is usually the same entity within an article, and its first
mention often has the telling context ("Mr. X", "X, a company"): Krishnan &
Manning (2006) gained 1.3 F on CoNLL-2003 from such non-local consistency. This
layer gives the BiLSTM-CRF that evidence directly: for every token, the mean of
the tok2vec vectors of all tokens of the doc with the same `attr` (LOWER by
default: a headline's "GERMANY" meets the story's "Germany"), concatenated with
its own vector. A word that occurs once gets its own vector twice. Docs are
whole articles in CoNLL training and in an app's text, so the mean spans the
article; a doc split into sentences sees only its sentence.

    [components.crf_ner.model.tok2vec]
    @architectures = "conll_crf.DocumentContext.v1"
    attr = "LOWER"

    [components.crf_ner.model.tok2vec.tok2vec]
    @architectures = "spacy.Tok2Vec.v2"
    ...

Computed with thinc's ops (scatter-add by group), so it runs wherever the
tok2vec's output lives; the gradient of a mean flows back to every occurrence.
"""

from typing import List

import numpy
from spacy.attrs import intify_attr
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model
from thinc.types import Floats2d


@registry.architectures("conll_crf.DocumentContext.v1")
def build_document_context(
    tok2vec: Model[List[Doc], List[Floats2d]], attr: str = "LOWER", mode: str = "concat"
) -> Model[List[Doc], List[Floats2d]]:
    """`tok2vec`'s vectors [n, D] -> [n, 2D]: each token's vector, then the mean
    vector of the doc's tokens with the same `attr` (a spaCy token attribute).
    `mode` "add": [n, D], the token's vector plus that mean (the layers after it
    stay as wide, and as fast, as without the context)."""
    attr_id = intify_attr(attr)
    if attr_id is None:
        raise ValueError(f"conll_crf.DocumentContext.v1: unknown token attribute {attr!r}")
    if mode not in ("concat", "add"):
        raise ValueError(f"conll_crf.DocumentContext.v1: mode must be 'concat' or 'add', not {mode!r}")
    return Model(
        "document_context",
        _forward,
        init=_init,
        layers=[tok2vec],
        dims={"nO": None},
        attrs={"attr": attr_id, "mode": mode},
    )


def _init(model: Model, X=None, Y=None) -> None:
    tok2vec = model.layers[0]
    tok2vec.initialize(X=X)
    if tok2vec.has_dim("nO") and tok2vec.get_dim("nO"):
        factor = 2 if model.attrs["mode"] == "concat" else 1
        model.set_dim("nO", factor * tok2vec.get_dim("nO"), force=True)


def _groups(doc: Doc, attr: int):
    """Per token its group (tokens with the same attr value) and every group's size."""
    keys = doc.to_array([attr]).reshape(-1)
    _, inverse, counts = numpy.unique(keys, return_inverse=True, return_counts=True)
    return inverse.astype("int32"), counts.astype("float32")


def _forward(model: Model, docs: List[Doc], is_train: bool):
    tok2vec = model.layers[0]
    Xs, bp_tok2vec = tok2vec(docs, is_train)
    ops = model.ops
    attr = model.attrs["attr"]
    add = model.attrs["mode"] == "add"
    groups = []
    Ys = []
    for doc, X in zip(docs, Xs):
        if not len(doc):
            groups.append(None)
            Ys.append(ops.alloc2f(0, (1 if add else 2) * X.shape[1] if X.ndim == 2 else 0))
            continue
        inverse, counts = _groups(doc, attr)
        inverse_d, counts_d = ops.asarray1i(inverse), ops.asarray1f(counts)
        sums = ops.alloc2f(len(counts), X.shape[1])
        ops.scatter_add(sums, inverse_d, X)
        mean = (sums / counts_d[:, None])[inverse_d]
        groups.append((inverse_d, counts_d))
        Ys.append(X + mean if add else ops.xp.concatenate([X, mean], axis=1))

    def backprop(dYs: List[Floats2d]) -> List[Floats2d]:
        dXs = []
        for dY, group in zip(dYs, groups):
            width = dY.shape[1] if add else dY.shape[1] // 2
            if group is None:
                dXs.append(ops.alloc2f(0, width if dY.ndim == 2 else 0))
                continue
            inverse_d, counts_d = group
            d_mean = dY if add else dY[:, width:]
            d_sums = ops.alloc2f(len(counts_d), width)
            ops.scatter_add(d_sums, inverse_d, d_mean)
            dXs.append((dY if add else dY[:, :width]) + (d_sums / counts_d[:, None])[inverse_d])
        return bp_tok2vec(dXs)

    return Ys, backprop

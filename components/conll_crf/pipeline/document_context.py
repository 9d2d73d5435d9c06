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

Three ways to give the mean to the layers after it (`mode`):
- "concat": [own vector, mean], twice as wide: the BiLSTM after it costs more;
- "add": own vector + mean, as wide and as fast as without the context, but the
  BiLSTM cannot tell the two apart;
- "project": own vector + mean + mean @ D.T, with D a learned [width, width]
  matrix that starts at 0 (so training starts from "add", and weight decay
  pulls back towards it): the context gets a learned direction of its own, at
  the cost of one [n, width] x [width, width] product.

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

MODES = ("concat", "add", "project")


@registry.architectures("conll_crf.DocumentContext.v1")
def build_document_context(
    tok2vec: Model[List[Doc], List[Floats2d]], attr: str = "LOWER", mode: str = "concat"
) -> Model[List[Doc], List[Floats2d]]:
    """`tok2vec`'s vectors [n, D] -> [n, 2D]: each token's vector, then the mean
    vector of the doc's tokens with the same `attr` (a spaCy token attribute).
    `mode` "add": [n, D], the token's vector plus that mean (the layers after it
    stay as wide, and as fast, as without the context); "project": [n, D], the
    token's vector plus the mean plus the mean times a learned matrix (module doc)."""
    attr_id = intify_attr(attr)
    if attr_id is None:
        raise ValueError(f"conll_crf.DocumentContext.v1: unknown token attribute {attr!r}")
    if mode not in MODES:
        raise ValueError(
            f"conll_crf.DocumentContext.v1: mode must be one of {', '.join(map(repr, MODES))}, not {mode!r}"
        )
    return Model(
        "document_context",
        _forward,
        init=_init,
        layers=[tok2vec],
        dims={"nO": None},
        attrs={"attr": attr_id, "mode": mode},
        params={"D": None} if mode == "project" else {},
    )


def _init(model: Model, X=None, Y=None) -> None:
    tok2vec = model.layers[0]
    tok2vec.initialize(X=X)
    if tok2vec.has_dim("nO") and tok2vec.get_dim("nO"):
        width = tok2vec.get_dim("nO")
        model.set_dim("nO", (2 if model.attrs["mode"] == "concat" else 1) * width, force=True)
        if model.attrs["mode"] == "project" and not model.has_param("D"):
            model.set_param("D", model.ops.alloc2f(width, width))


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
    mode = model.attrs["mode"]
    D = model.get_param("D") if mode == "project" else None
    groups = []
    means = []
    Ys = []
    for doc, X in zip(docs, Xs):
        if not len(doc):
            groups.append(None)
            means.append(None)
            Ys.append(ops.alloc2f(0, (2 if mode == "concat" else 1) * X.shape[1] if X.ndim == 2 else 0))
            continue
        inverse, counts = _groups(doc, attr)
        inverse_d, counts_d = ops.asarray1i(inverse), ops.asarray1f(counts)
        sums = ops.alloc2f(len(counts), X.shape[1])
        ops.scatter_add(sums, inverse_d, X)
        mean = (sums / counts_d[:, None])[inverse_d]
        groups.append((inverse_d, counts_d))
        means.append(mean)
        if mode == "concat":
            Ys.append(ops.xp.concatenate([X, mean], axis=1))
        elif mode == "add":
            Ys.append(X + mean)
        else:
            Ys.append(X + mean + ops.gemm(mean, D, trans2=True))

    def backprop(dYs: List[Floats2d]) -> List[Floats2d]:
        dXs = []
        for dY, group, mean in zip(dYs, groups, means):
            width = dY.shape[1] // 2 if mode == "concat" else dY.shape[1]
            if group is None:
                dXs.append(ops.alloc2f(0, width if dY.ndim == 2 else 0))
                continue
            inverse_d, counts_d = group
            if mode == "concat":
                d_own, d_mean = dY[:, :width], dY[:, width:]
            elif mode == "add":
                d_own, d_mean = dY, dY
            else:
                model.inc_grad("D", ops.gemm(dY, mean, trans1=True))
                d_own, d_mean = dY, dY + ops.gemm(dY, D)
            d_sums = ops.alloc2f(len(counts_d), width)
            ops.scatter_add(d_sums, inverse_d, d_mean)
            dXs.append(d_own + (d_sums / counts_d[:, None])[inverse_d])
        return bp_tok2vec(dXs)

    return Ys, backprop

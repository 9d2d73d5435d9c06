"""Registered architectures: `conll_crf.BiLSTMCRF.v1` and the CPU embedding
`conll_crf.HashCharEmbed.v1`. Registered names never change behaviour: a
change of behaviour gets a new version."""
from typing import List, Optional, Sequence

from spacy.attrs import IS_SPACE
from spacy.ml.models import CharacterEmbed, MultiHashEmbed
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, concatenate
from thinc.types import Floats2d

from .layers import bilstm_crf_head, build_head


@registry.architectures("conll_crf.BiLSTMCRF.v1")
def build_bilstm_crf(
    tok2vec: Model[List[Doc], List[Floats2d]],
    hidden_width: int = 256,
    depth: int = 1,
    dropout: float = 0.2,
    mixed_precision: bool = False,
    nO: Optional[int] = None,
) -> Model:
    """tok2vec (a spaCy Tok2Vec or a TransformerListener) -> BiLSTM (torch;
    `depth` 0: none) -> linear emissions -> constrained LinearChainCRF.

    Input: (docs, targets or None); targets: per doc a float32 0/1 array
    [n_tokens, K] of the tags each token's gold annotation admits (all of them
    where it is missing). With targets the output is the NLL per doc (backprop
    reaches the tok2vec); without, the Viterbi tag indices per doc, whitespace
    tokens forced to O. `dropout` applies inside the torch part
    (spaCy's `drop` does not reach torch modules). nO (number of tags) is set
    by the component at initialization."""
    return _build(tok2vec, hidden_width, depth, dropout, mixed_precision, nO, "crf")


@registry.architectures("conll_crf.BiLSTMSoftmax.v1")
def build_bilstm_softmax(
    tok2vec: Model[List[Doc], List[Floats2d]],
    hidden_width: int = 256,
    depth: int = 1,
    dropout: float = 0.2,
    mixed_precision: bool = False,
    nO: Optional[int] = None,
) -> Model:
    """Ablation baseline: BiLSTMCRF.v1 with the CRF replaced by a per-token
    softmax (cross-entropy loss, argmax decoding, no transition constraints)."""
    return _build(tok2vec, hidden_width, depth, dropout, mixed_precision, nO, "softmax")


def _build(tok2vec, hidden_width, depth, dropout, mixed_precision, nO, decoder) -> Model:
    head = bilstm_crf_head(hidden_width, depth, dropout, mixed_precision, decoder)
    return Model(
        "bilstm_crf",
        _forward,
        init=_init,
        layers=[tok2vec, head],
        refs={"tok2vec": tok2vec, "output_layer": head},
        dims={"nO": nO},
        attrs={"tags": None, "scheme": None, "decoder": decoder},
    )


def _forward(model: Model, inputs, is_train: bool):
    docs, targets = inputs
    tok2vec, head = model.layers
    if not any(len(doc) for doc in docs):  # nothing to encode (some tok2vecs fail on it)
        if targets is None:
            return [model.ops.alloc1i(0) for _ in docs], lambda dY: []
        return model.ops.alloc1f(len(docs)), lambda dY: []
    Xs, bp_tok2vec = tok2vec(docs, is_train)
    outside = None
    if targets is None:  # whitespace tokens can only be O
        outside = [model.ops.asarray1f(doc.to_array(IS_SPACE).astype("float32")) for doc in docs]
    Y, bp_head = head((Xs, targets, outside), is_train)

    def backprop(dY):
        return bp_tok2vec(bp_head(dY))

    return Y, backprop


def _init(model: Model, X: Optional[List[Doc]] = None, Y=None) -> None:
    tags: Sequence[str] = model.attrs["tags"]
    if not tags:
        raise ValueError("conll_crf.BiLSTMCRF.v1: set model.attrs['tags'] (the component does) before initializing")
    tok2vec, head = model.layers
    tok2vec.initialize(X=X)
    if tok2vec.has_dim("nO") and tok2vec.get_dim("nO"):
        n_in = tok2vec.get_dim("nO")
    else:  # e.g. a TransformerListener: read the width off a forward pass
        if not X:
            raise ValueError("conll_crf.BiLSTMCRF.v1 needs sample docs to infer the tok2vec width")
        n_in = tok2vec.predict(X[:1])[0].shape[1]
    build_head(head, n_in, tags, model.attrs["scheme"])
    model.set_dim("nO", len(tags), force=True)


@registry.architectures("conll_crf.HashCharEmbed.v1")
def build_hash_char_embed(
    width: int = 96,
    attrs: List[str] = ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
    rows: List[int] = [5000, 1000, 2500, 2500],
    char_width: int = 64,
    char_rows: int = 5000,
    nM: int = 64,
    nC: int = 8,
) -> Model[List[Doc], List[Floats2d]]:
    """Hashed word features (MultiHashEmbed over `attrs`) concatenated with
    character features (CharacterEmbed: the first and last nC/2 characters,
    case kept, plus a hashed NORM). Output width: width + char_width."""
    return concatenate(
        MultiHashEmbed(width=width, attrs=attrs, rows=rows, include_static_vectors=False),
        CharacterEmbed(width=char_width, rows=char_rows, nM=nM, nC=nC, include_static_vectors=False, feature="NORM"),
    )

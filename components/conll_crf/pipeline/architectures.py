"""The registered architectures, current versions: `conll_crf.BiLSTMCRF.v3`
(tok2vec -> BiLSTM -> CRF), `conll_crf.HashCharEmbed.v5` (the CPU embedding:
hashed word features, characters, optional static vectors with an optional
word table stacked beside them, word dropout, known words),
`conll_crf.HashCharCNNEmbed.v1` (the same with a character CNN) and
`conll_crf.WithSpelling.v1` (spelling features beside a transformer's).
Registered names never change behaviour: a change of behaviour gets a new
version, and the older versions live on in legacy.py as shims over the
builders here (`bilstm_crf`, `hash_char_embed`)."""

import types
from typing import List, Optional, Sequence

from spacy.attrs import LOWER, NORM, ORTH, intify_attr
from spacy.ml.featureextractor import FeatureExtractor
from spacy.ml.models import CharacterEmbed, MultiHashEmbed
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import (
    Config,
    HashEmbed,
    Maxout,
    Model,
    PyTorchShim,
    chain,
    concatenate,
    get_torch_default_device,
    list2ragged,
    ragged2list,
    with_array,
)
from thinc.types import Floats2d, Ragged

from .char_cnn import char_cnn
from .length_groups import (
    MAX_GROUP_POSITIONS_GPU,
    STEP_COST_CPU,
    STEP_COST_GPU,
    length_groups,
)
from .stacked_vectors import stacked_static_vectors
from .thinc_head import Prediction, bilstm_crf_head, build_head
from .word_dropout import concatenate_with_word_dropout, unknown_words

WORD_IDENTITY_ATTRS = (ORTH, LOWER, NORM)


@registry.architectures("conll_crf.BiLSTMCRF.v3")
def build_bilstm_crf_v3(
    tok2vec: Model[List[Doc], List[Floats2d]],
    hidden_width: int = 256,
    depth: int = 1,
    dropout: float = 0.2,
    learn_rate_scale: float = 1.0,
    skip: bool = False,
    mixed_precision: bool = False,
    nO: Optional[int] = None,
) -> Model:
    """`conll_crf.BiLSTMCRF.v2` with one more option, `skip`: the emission
    layer reads the BiLSTM's output concatenated with the BiLSTM's input (the
    tok2vec's vectors after the head's dropout), so local features need not
    pass through the BiLSTM's 2 x hidden_width state. With skip = false it is
    v2, weight for weight."""
    return bilstm_crf(
        tok2vec,
        hidden_width=hidden_width,
        depth=depth,
        dropout=dropout,
        learn_rate_scale=learn_rate_scale,
        skip=skip,
        mixed_precision=mixed_precision,
        nO=nO,
    )


def bilstm_crf(
    tok2vec: Model[List[Doc], List[Floats2d]],
    *,
    hidden_width: int = 256,
    depth: int = 1,
    dropout: float = 0.2,
    learn_rate_scale: float = 1.0,
    skip: bool = False,
    mixed_precision: bool = False,
    nO: Optional[int] = None,
    doc_constraints: bool = True,
    average_head: bool = True,
) -> Model:
    """The BiLSTM-CRF model behind every version of `conll_crf.BiLSTMCRF`.

    Input: (docs, targets or None, constraints or None, confidence or None);
    targets: per doc a float32 0/1 array [n_tokens, K] of the tags each
    token's gold annotation admits (all of them where it is missing);
    constraints: per doc the tags each token may take at all (whitespace,
    sentence boundaries and preset entities, see doc_constraints.py), hard in
    training (the partition function) and in prediction. With targets the
    output is the NLL per doc (backprop reaches the tok2vec); without, the
    Viterbi tag indices per doc, or with confidence = (candidate_threshold,
    temperature) a thinc_head.Prediction with entity probabilities.

    tok2vec (Model): a spaCy Tok2Vec or a TransformerListener.
    hidden_width, depth, dropout, skip: the torch head's (see head.BiLSTMCRFModule).
    learn_rate_scale (float): multiplies the optimizer's learning rate for the head.
    mixed_precision (bool): autocast the head on a GPU.
    nO (Optional[int]): number of tags, set by the component at initialization.
    doc_constraints (bool): the component applies sentence boundaries and preset
        entities (True) or only whitespace (False: conll_crf.BiLSTMCRF.v1).
    average_head (bool): spaCy's parameter averages reach the head (False:
        thinc's PyTorchShim behaviour, conll_crf.BiLSTMCRF.v1).
    RETURNS (Model): the model, with refs "tok2vec" and "output_layer"."""
    head = bilstm_crf_head(hidden_width, depth, dropout, mixed_precision, learn_rate_scale, skip)
    if not average_head:
        head.layers[0].shims[0].use_params = types.MethodType(PyTorchShim.use_params, head.layers[0].shims[0])
    return Model(
        "bilstm_crf",
        _forward,
        init=_init,
        layers=[tok2vec, head],
        refs={"tok2vec": tok2vec, "output_layer": head},
        dims={"nO": nO},
        attrs={"tags": None, "scheme": None, "doc_constraints": doc_constraints},
    )


def _forward(model: Model, inputs, is_train: bool):
    docs, targets, constraints, confidence = inputs
    tok2vec, head = model.layers
    if not any(len(doc) for doc in docs):  # nothing to encode (some tok2vecs fail on it)
        return head(([model.ops.alloc2f(0, 0) for _ in docs], targets, constraints, confidence), is_train)
    Xs, bp_tok2vec = tok2vec(docs, is_train)
    if targets is None:
        on_cpu = get_torch_default_device().type == "cpu"
        groups = length_groups(
            [len(x) for x in Xs],
            STEP_COST_CPU if on_cpu else STEP_COST_GPU,
            None if on_cpu else MAX_GROUP_POSITIONS_GPU,
        )
        if len(groups) > 1:  # a few long docs among short ones: the head runs per group
            outs = [
                head(
                    (
                        [Xs[i] for i in g],
                        None,
                        None if constraints is None else [constraints[i] for i in g],
                        confidence,
                    ),
                    False,
                )[0]
                for g in groups
            ]
            return _merge_predictions(model.ops, outs, groups, len(docs)), lambda dY: []
    Y, bp_head = head((Xs, targets, constraints, confidence), is_train)

    def backprop(dY):
        return bp_tok2vec(bp_head(dY))

    return Y, backprop


def _merge_predictions(ops, outs, groups: List[List[int]], n_docs: int):
    """The head's outputs per group back in doc order (entity rows renumbered and re-sorted)."""
    tag_ids: List = [None] * n_docs
    for out, group in zip(outs, groups):
        ids = out.tag_ids if isinstance(out, Prediction) else out
        for local, i in enumerate(group):
            tag_ids[i] = ids[local]
    if not isinstance(outs[0], Prediction):
        return tag_ids
    xp = ops.xp
    merged = []
    for field, prob_field in (("entities", "entity_probs"), ("candidates", "candidate_probs")):
        rows, probs = [], []
        for out, group in zip(outs, groups):
            r = xp.asarray(getattr(out, field)).reshape(-1, 4).copy()
            r[:, 0] = xp.asarray(group)[r[:, 0]] if len(r) else r[:, 0]
            rows.append(r)
            probs.append(xp.asarray(getattr(out, prob_field)))
        rows_all, probs_all = xp.concatenate(rows), xp.concatenate(probs)
        order = xp.lexsort(rows_all[:, ::-1].T) if len(rows_all) else xp.arange(0)
        merged += [rows_all[order], probs_all[order]]
    return Prediction(tag_ids, *merged)


def _init(model: Model, X: Optional[List[Doc]] = None, Y=None) -> None:
    tags: Sequence[str] = model.attrs["tags"]
    if not tags:
        raise ValueError("conll_crf.BiLSTMCRF: set model.attrs['tags'] (the component does) before initializing")
    tok2vec, head = model.layers
    tok2vec.initialize(X=X)
    if tok2vec.has_dim("nO") and tok2vec.get_dim("nO"):
        n_in = tok2vec.get_dim("nO")
    else:  # e.g. a TransformerListener: read the width off a forward pass
        if not X:
            raise ValueError("conll_crf.BiLSTMCRF needs sample docs to infer the tok2vec width")
        n_in = tok2vec.predict(X[:1])[0].shape[1]
    build_head(head, n_in, tags, model.attrs["scheme"])
    model.set_dim("nO", len(tags), force=True)


def hash_char_embed(
    width: int,
    attrs: List[str],
    rows: List[int],
    char_width: int,
    char_rows: int,
    nM: int,
    nC: int,
    include_static_vectors: bool = False,
) -> Model[List[Doc], List[Floats2d]]:
    """Hashed word features (spaCy's MultiHashEmbed over `attrs`, with the
    pipeline's static vectors when `include_static_vectors`: looked up by the
    table's attribute and mixed in by its Maxout layer) concatenated with
    character features (CharacterEmbed: the first and last nC/2 characters,
    case kept, plus a hashed NORM). Output width: width + char_width."""
    return concatenate(
        MultiHashEmbed(width=width, attrs=attrs, rows=rows, include_static_vectors=include_static_vectors),
        CharacterEmbed(width=char_width, rows=char_rows, nM=nM, nC=nC, include_static_vectors=False, feature="NORM"),
    )


@registry.architectures("conll_crf.HashCharEmbed.v5")
def build_hash_char_embed_v5(
    width: int = 96,
    attrs: List[str] = ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
    rows: List[int] = [5000, 1000, 2500, 2500],
    char_width: int = 64,
    char_rows: int = 5000,
    nM: int = 64,
    nC: int = 8,
    include_static_vectors: bool = False,
    word_dropout: float = 0.0,
    word_table: Optional[str] = None,
    word_table_attr: str = "LOWER",
    known_words_min_count: int = 0,
) -> Model[List[Doc], List[Floats2d]]:
    """Hashed word features and characters (`hash_char_embed`), static vectors
    when `include_static_vectors` (set them with [initialize] vectors, e.g. a
    table from scripts/encoder_vectors.py), and:

    - `word_table`: a spaCy vectors folder (scripts/word_table.py writes GloVe
      6B 50d as one) whose vectors are stacked beside the static vectors
      (stacked_vectors.py: one projection reads both; looked up by
      `word_table_attr`). Read at `nlp.initialize`, saved with the weights.
      None: no second table, and the model is v3's, layer for layer.
    - `word_dropout` (Lample et al. 2016): in training, that fraction of the
      tokens, drawn afresh each batch, lose their word identity (the hashed
      ORTH, LOWER or NORM features, in the MultiHashEmbed and in the
      CharacterEmbed alike, see word_dropout.py) and keep their spelling
      (prefix, suffix, shape, characters) and context. Nothing changes in
      prediction. Static vectors and the word table are not dropped.
    - `known_words_min_count` (new in v5; 0, the default, is v4): a word the
      training data has fewer times than this loses its word identity the same
      way, in training and in prediction (Lample et al.'s UNK: a word never
      seen in training reads the "unknown" identity that word dropout trains
      instead of hashed rows other words trained). Counted by crf_ner.initialize
      from the training examples (gold tokens and the tokenizer's split of
      their text), saved with the weights: the embedding must be in crf_ner's
      own model, not in a shared tok2vec component.

    Output width: width + char_width."""
    if known_words_min_count < 0:
        raise ValueError(f"conll_crf.HashCharEmbed.v5: known_words_min_count must be >= 0, got {known_words_min_count}")
    if word_table is None:
        model = hash_char_embed(width, attrs, rows, char_width, char_rows, nM, nC, include_static_vectors)
    elif not include_static_vectors:
        raise ValueError(
            "conll_crf.HashCharEmbed.v5: word_table stacks its vectors beside the pipeline's static vectors; "
            "set include_static_vectors = true (and [initialize] vectors)"
        )
    else:
        static = stacked_static_vectors(width, word_table, word_table_attr)
        characters = CharacterEmbed(
            width=char_width, rows=char_rows, nM=nM, nC=nC, include_static_vectors=False, feature="NORM"
        )
        model = concatenate(multi_hash_embed_stacked(width, attrs, rows, static), characters)
    if word_dropout or known_words_min_count:
        # (the CharacterEmbed always reads NORM: there is one node at least)
        _drop_word_identity(model, known_words_min_count)
    if not word_dropout:
        return model
    return concatenate_with_word_dropout(model, word_dropout)


def multi_hash_embed_stacked(
    width: int, attrs: List[str], rows: List[int], static: Model[List[Doc], Ragged]
) -> Model[List[Doc], List[Floats2d]]:
    """spaCy's MultiHashEmbed (v2: the same tables, seeds and mixing Maxout) with `static` in the place of its
    StaticVectors layer: a `width`-wide projection of static vectors per token, as a Ragged."""
    if len(rows) != len(attrs):
        raise ValueError(f"Mismatched lengths: {len(rows)} vs {len(attrs)}")
    # seeds 8, 9, ... as MultiHashEmbed gives its tables
    embeddings = [HashEmbed(width, rows[i], column=i, seed=8 + i, dropout=0.0) for i in range(len(attrs))]
    words = chain(FeatureExtractor(attrs), list2ragged(), with_array(concatenate(*embeddings)))
    mix = with_array(Maxout(width, width * (len(embeddings) + 1), nP=3, dropout=0.0, normalize=True))
    return chain(concatenate(words, static), mix, ragged2list())


@registry.architectures("conll_crf.HashCharCNNEmbed.v1")
def build_hash_char_cnn_embed(
    width: int = 96,
    attrs: List[str] = ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
    rows: List[int] = [5000, 1000, 2500, 2500],
    char_width: int = 32,
    char_dim: int = 32,
    char_rows: int = 2000,
    max_chars: int = 20,
    include_static_vectors: bool = False,
    word_dropout: float = 0.0,
) -> Model[List[Doc], List[Floats2d]]:
    """HashCharEmbed.v3 with a character CNN over each word's whole spelling
    (char_cnn.py, `char_width` wide) in place of spaCy's CharacterEmbed (the
    first and last nC/2 characters and a hashed NORM). Word dropout acts on
    the hashed word features only: the CNN reads spelling, not identity.
    Output width: width + char_width."""
    words = MultiHashEmbed(width=width, attrs=attrs, rows=rows, include_static_vectors=include_static_vectors)
    model = concatenate(words, char_cnn(char_width, char_dim=char_dim, char_rows=char_rows, max_chars=max_chars))
    if not word_dropout:
        return model
    _drop_word_identity(model)
    return concatenate_with_word_dropout(model, word_dropout)


def _drop_word_identity(model: Model, min_count: int = 0) -> None:
    """An `unknown_words` node after every FeatureExtractor in `model` that reads a word-identity attribute; with
    `min_count`, it also drops the words the training data has fewer times (word_dropout.py)."""
    for extractor in [node for node in model.walk() if node.name == "extract_features"]:
        columns = [intify_attr(c) for c in extractor.attrs["columns"]]
        word_columns = [i for i, c in enumerate(columns) if c in WORD_IDENTITY_ATTRS]
        if word_columns:
            unknown = unknown_words(word_columns, [columns[i] for i in word_columns], min_count)
            model.replace_node(extractor, chain(extractor, unknown))


@registry.architectures("conll_crf.WithSpelling.v1")
def build_with_spelling(
    tok2vec: Model[List[Doc], List[Floats2d]], spelling: Model[List[Doc], List[Floats2d]]
) -> Model[List[Doc], List[Floats2d]]:
    """The token vectors of `tok2vec` (e.g. a TransformerListener) concatenated
    with `spelling` features of the same tokens (e.g. conll_crf.HashCharEmbed.v1:
    hashed shape, prefix and suffix, and the characters with their case). For
    uncased encoders such as all-MiniLM-L6-v2, which cannot see the case that
    carries much of CoNLL-2003's signal; usable by spaCy's `ner` as its tok2vec
    too, so a baseline can get the same features."""
    model = concatenate(tok2vec, spelling)
    model.name = "with_spelling"
    return model


# The shipped CPU recipe (configs/cpu_crf.cfg) without its static vectors: a new pipeline has
# none, and spaCy's MultiHashEmbed fails to initialize without them. With vectors, set
# include_static_vectors = true and [initialize] vectors, as configs/cpu_crf.cfg does.
default_model_config = """
[model]
@architectures = "conll_crf.BiLSTMCRF.v3"
hidden_width = 64
depth = 1
dropout = 0.25
learn_rate_scale = 1.0
skip = true
mixed_precision = false

[model.tok2vec]
@architectures = "spacy.Tok2Vec.v2"

[model.tok2vec.embed]
@architectures = "conll_crf.HashCharEmbed.v4"
width = 96
attrs = ["NORM", "PREFIX", "SUFFIX", "SHAPE"]
rows = [5000, 1000, 2500, 2500]
char_width = 32
char_rows = 5000
nM = 32
nC = 8
include_static_vectors = false
word_dropout = 0.2

[model.tok2vec.encode]
@architectures = "spacy.MaxoutWindowEncoder.v2"
width = 128
depth = 2
window_size = 1
maxout_pieces = 3
"""
DEFAULT_MODEL = Config().from_str(default_model_config)["model"]

"""Word dropout for hashed embeddings (Lample et al. 2016, sec. 4.3): in
training, a random fraction of the tokens have their word identity (the
hashed NORM) replaced by one fixed "unknown word" id, so the model learns
what to do with words it has not memorised (most entities of a new text)
from their spelling and context: prefix, suffix, shape and characters stay.

Two kinds of node. `unknown_words` sits right after a spaCy FeatureExtractor
and sets its word-identity columns to UNKNOWN_WORD_ID on the tokens of the
current mask. `concatenate_with_word_dropout` is thinc's `concatenate` (the
same layers, forward and init) that, in a training call, first draws one mask
per doc and hands it to every `unknown_words` node below it for that call only,
so a dropped word is unknown everywhere at once (conll_crf.HashCharEmbed reads
NORM in its MultiHashEmbed and in its CharacterEmbed), whatever order they run
in. Nothing is shared outside the model, so `Model.copy()` (spaCy's
`replace_listeners` copies a tok2vec) and serialization keep it working; it
replaces the concatenate node rather than adding one, so the model has as many
nodes as v2's plus one per FeatureExtractor. In prediction nothing is drawn and
nothing changes.

Known words (`conll_crf.HashCharEmbed.v5`'s `known_words_min_count`, Lample
et al.'s UNK for words outside the training vocabulary): an `unknown_words`
node made with `min_count > 0` also sets to UNKNOWN_WORD_ID, in training and
prediction alike, every word its training data had fewer than `min_count`
times. Without it a word never seen in training gets whatever hashed rows
other words trained (HashEmbed's collisions); with it, it gets the one
"unknown" identity that word dropout trains. The known keys are counted once,
from the training examples, by `count_known_words` (crf_ner.initialize calls
it before the model is built, so the embedding must be in crf_ner's own model,
not in a shared tok2vec; an augmenter that moves names about, such as mention
replacement, moves them in the counting pass too) and saved with the weights as the node's
"known" parameter (sorted uint64 hashes; looked up on the device by a binary
search)."""

import logging
import warnings
from collections import Counter
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy
from spacy.tokens import Doc
from spacy.training import Example
from thinc.api import Model
from thinc.layers.concatenate import forward as concatenate_forward
from thinc.layers.concatenate import init as concatenate_init
from thinc.types import Floats2d, Ints2d

from .sorted_keys import find_sorted

# The id that replaces a dropped word's NORM hash: any fixed 64-bit value that
# no real string hashes to in practice (HashEmbed hashes it on to its rows).
UNKNOWN_WORD_ID = 0x554E4B4E4F574E21  # "UNKNOWN!"
# Fewer training examples than this for the known words draws a warning (a streamed corpus gives initialize 100)
MIN_EXAMPLES = 200

logger = logging.getLogger(__name__)


def concatenate_with_word_dropout(
    model: Model[List[Doc], List[Floats2d]], rate: float
) -> Model[List[Doc], List[Floats2d]]:
    """`model`, a thinc `concatenate` of embeddings with `unknown_words` nodes
    inside, as one node that drops words at `rate` in training (see module doc)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"word dropout: rate must be in [0, 1), got {rate}")
    if model._func is not concatenate_forward:
        raise ValueError(f"word dropout: expected a thinc concatenate of embeddings, got {model.name}")
    if not any(node._func is _unknown_forward for node in model.walk()):
        raise ValueError("word dropout: the embedding has no unknown_words node to drop words in")
    return Model(
        model.name,
        _dropout_forward,
        init=concatenate_init,
        dims={name: model.maybe_get_dim(name) for name in model.dim_names},
        layers=list(model.layers),
        attrs={"word_dropout": rate},
    )


def unknown_words(
    columns: Sequence[int], attrs: Sequence[int] = (), min_count: int = 0
) -> Model[List[Ints2d], List[Ints2d]]:
    """A FeatureExtractor's output with its `columns` (the word-identity
    attributes `attrs`, spaCy attribute ids) set to UNKNOWN_WORD_ID on the tokens
    of the mask that the enclosing `concatenate_with_word_dropout` sets for a
    training call (`attrs["mask"]`: one boolean array per doc, None outside such
    a call), and, when `min_count` > 0, on every word counted fewer than
    `min_count` times in the training data (see module doc). One known set serves all the node's attributes, and
    a token whose word is unknown in any of its columns loses all of them, as a dropped word does (the CPU recipes
    read NORM alone)."""
    if min_count < 0:
        raise ValueError(f"unknown_words: min_count must be >= 0, got {min_count}")
    if min_count and len(attrs) != len(columns):
        raise ValueError("unknown_words: known words need the attribute of each column")
    return Model(
        "unknown_words",
        _unknown_forward,
        attrs={"columns": list(columns), "mask": None, "word_attrs": list(attrs), "min_count": min_count},
        params={"known": None} if min_count else {},
    )


def count_known_words(
    model: Model, examples: Iterable[Example], make_doc: Optional[Callable[[str], Doc]] = None
) -> int:
    """Set the known words of every `unknown_words` node in `model` that has a min_count (see module doc) from the
    training `examples`. A word's count is the larger of its counts in the examples' gold tokens and in their text as
    `make_doc` (the pipeline's tokenizer) splits it, or in the examples' predicted docs without `make_doc`: the model
    trains on both tokenizations, and counting both keeps the known words from depending on which articles an
    augmenter happened to re-tokenize in this pass. Returns how many examples were counted; 0 when the model has no
    such node, and then `examples` is not read."""
    nodes = [n for n in model.walk() if n._func is _unknown_forward and n.attrs.get("min_count")]
    if not nodes:
        return 0
    attrs = sorted({a for node in nodes for a in node.attrs["word_attrs"]})
    gold, split = ({a: Counter() for a in attrs} for _ in range(2))
    n_examples = 0
    for eg in examples:
        n_examples += 1
        other = make_doc(eg.reference.text) if make_doc is not None else eg.predicted
        for doc, counts in ((eg.reference, gold), (other, split)):
            values = doc.to_array(attrs).reshape(len(doc), len(attrs))
            for i, a in enumerate(attrs):
                counts[a].update(values[:, i].tolist())
    for node in nodes:
        min_count = node.attrs["min_count"]
        known = set()
        for a in node.attrs["word_attrs"]:
            known.update(key for key, n in gold[a].items() if n >= min_count)
            known.update(key for key, n in split[a].items() if n >= min_count)
        node.set_param("known", node.ops.asarray(numpy.array(sorted(known), dtype="uint64"), dtype="uint64"))
        logger.info("known words (%s): %d from %d training examples", node.name, len(known), n_examples)
    if n_examples < MIN_EXAMPLES:
        warnings.warn(
            f"known words: counted from {n_examples} training examples only, so most words will read as unknown "
            "(spaCy gives initialize only 100 examples of a streamed corpus, [training] max_epochs = -1)"
        )
    return n_examples


def _dropout_forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[List[Floats2d], Callable]:
    rate = model.attrs["word_dropout"]
    if not is_train or rate == 0.0:
        return concatenate_forward(model, docs, is_train)
    xp = model.ops.xp
    masks = [xp.random.random_sample(len(doc)) < rate for doc in docs]
    # found by function, not name: loading weights renames nodes to the saved names
    nodes = [node for node in model.walk() if node._func is _unknown_forward]
    for node in nodes:
        node.attrs["mask"] = masks
    try:
        return concatenate_forward(model, docs, is_train)
    finally:
        for node in nodes:  # back to None: no mask outlives its call (nor reaches to_bytes)
            node.attrs["mask"] = None


def _unknown_forward(model: Model, Xs: List[Ints2d], is_train: bool) -> Tuple[List[Ints2d], Callable]:
    masks = model.attrs["mask"]
    if model.attrs.get("min_count"):
        if not model.has_param("known"):
            raise ValueError(
                "unknown_words: the known words were never counted; crf_ner.initialize counts them from the "
                "training examples, so the embedding with known_words_min_count must sit in crf_ner's own model, "
                "not in a shared tok2vec component (or call count_known_words(model, examples) before the model "
                "is initialized)"
            )
        masks = _unknown_masks(model, Xs, masks)
    if masks is None:
        return Xs, lambda dY: dY
    if [len(m) for m in masks] != [len(x) for x in Xs]:
        raise ValueError(
            "unknown_words: the mask does not fit the batch (tokens per doc "
            f"{[len(m) for m in masks]} against {[len(x) for x in Xs]})"
        )
    columns = list(model.attrs["columns"])
    xp = model.ops.xp
    Ys = []
    for x, mask in zip(Xs, masks):
        # a select, not a boolean-mask assignment: on cupy that would sync with the host per doc and column
        y = x.copy()
        y[:, columns] = xp.where(mask[:, None], xp.asarray(UNKNOWN_WORD_ID, dtype=y.dtype), y[:, columns])
        Ys.append(y)
    return Ys, lambda dY: dY


def _unknown_masks(model: Model, Xs: List[Ints2d], dropped) -> List:
    """Per doc, the tokens whose word (in any of the node's columns) is not known, or'ed with `dropped` (word
    dropout's masks, or None). One search over the whole batch, split back into docs by their (host-side) lengths."""
    xp = model.ops.xp
    known = model.get_param("known")
    if not Xs:
        return []
    if len(known):
        words = xp.concatenate([x[:, list(model.attrs["columns"])] for x in Xs])
        unknown = ~find_sorted(xp, known, words)[1].all(axis=1)
        masks = xp.split(unknown, numpy.cumsum([len(x) for x in Xs[:-1]]).tolist())
    else:
        masks = [xp.ones(len(x), dtype=bool) for x in Xs]
    return masks if dropped is None else [m | d for m, d in zip(masks, dropped)]

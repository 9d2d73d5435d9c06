"""A character CNN over each word's whole spelling (Ma & Hovy 2016, sec. 2.1;
Lample et al. 2016 read it with a BiLSTM): every character, case kept,
embedded; a convolution over three characters at a time (a Maxout over the
window); the maximum over the word. spaCy's CharacterEmbed sees only the first
and last nC/2 characters, so the middle of a long name ("Schwarzenegger",
"Kazakhstan") never reaches it; names never seen in training are told apart
by their spelling and context, and this reads all of the spelling.

Words longer than `max_chars` keep their first and last `max_chars // 2`
characters: an affix says more than the middle, and the cost stays bounded.
Each distinct spelling in a batch is read once (most tokens of a batch repeat
a word) and its vector is shared by its tokens; the gradients of those tokens
are summed back onto it. The keys are deduplicated on the host, where spaCy
keeps the Doc arrays, and only the characters and the index go to the
device: one transfer each per batch."""

from typing import Callable, List, Optional, Tuple

import numpy
from spacy.attrs import ORTH
from spacy.tokens import Doc
from thinc.api import HashEmbed, Maxout, Model, chain, expand_window, reduce_max, with_array
from thinc.types import Floats2d, Ragged

CHAR_SEED = 31  # HashEmbed's seed for the character table: any fixed value


def char_cnn(
    width: int, char_dim: int = 32, char_rows: int = 2000, max_chars: int = 20
) -> Model[List[Doc], List[Floats2d]]:
    """Per token, a `width`-wide vector from its characters (see module doc):
    `char_dim`-wide character embeddings hashed into `char_rows` rows."""
    if max_chars < 2:
        raise ValueError(f"char_cnn: max_chars must be at least 2, got {max_chars}")
    reader: Model[Ragged, Floats2d] = chain(
        with_array(HashEmbed(char_dim, char_rows, seed=CHAR_SEED)),
        expand_window(window_size=1),
        with_array(Maxout(width, char_dim * 3, nP=3, normalize=True)),
        reduce_max(),
    )
    return Model(
        "char_cnn",
        _forward,
        init=_init,
        layers=[reader],
        dims={"nO": width},
        attrs={"max_chars": max_chars},
    )


def word_characters(spellings: List[str], max_chars: int) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """The code points of every spelling, concatenated (uint64), and each spelling's length:
    a spelling over `max_chars` keeps its first and last `max_chars // 2` characters."""
    half = max_chars // 2
    clipped = [s if len(s) <= max_chars else s[:half] + s[-half:] for s in spellings]
    # an empty spelling (none in spaCy's tokens, but a Doc can be built with one) reads as one space
    clipped = [s or " " for s in clipped]
    lengths = numpy.fromiter((len(s) for s in clipped), dtype="int32", count=len(clipped))
    codes = numpy.frombuffer("".join(clipped).encode("utf-32-le", "surrogatepass"), dtype="uint32").astype("uint64")
    return codes, lengths


def _forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[List[Floats2d], Callable]:
    ops = model.ops
    width = model.get_dim("nO")
    doc_lengths = [len(doc) for doc in docs]
    if not sum(doc_lengths):
        return [ops.alloc2f(n, width) for n in doc_lengths], lambda dYs: []
    keys = numpy.concatenate([doc.to_array(ORTH) for doc in docs])
    unique, inverse = numpy.unique(keys, return_inverse=True)
    strings = docs[0].vocab.strings
    codes, lengths = word_characters([strings[int(key)] for key in unique], model.attrs["max_chars"])
    reader = model.layers[0]
    Yu, bp_reader = reader(Ragged(ops.asarray(codes, dtype="uint64"), ops.asarray1i(lengths)), is_train)
    index = ops.asarray1i(inverse.reshape(-1))
    Y = Yu[index]
    splits = numpy.cumsum(doc_lengths)[:-1].tolist()
    Ys = ops.xp.split(Y, splits) if splits else [Y]

    def backprop(dYs: List[Floats2d]) -> List[Doc]:
        dYu = ops.alloc2f(*Yu.shape)
        ops.scatter_add(dYu, index, ops.xp.concatenate(dYs))
        bp_reader(dYu)
        return []

    return list(Ys), backprop


def _init(model: Model, X: Optional[List[Doc]] = None, Y=None) -> None:
    model.layers[0].initialize()

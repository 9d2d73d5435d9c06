"""scripts/encoder_vectors.py: an encoder's input embedding table as spaCy static vectors, from WordPiece
(uncased BERT) and byte-level BPE (cased RoBERTa) vocabularies, checked row by row against the weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import spacy

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "encoder_vectors.py"


def build(model_dir, out):
    result = subprocess.run([sys.executable, str(SCRIPT), str(model_dir), str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return spacy.load(out).vocab.vectors, result.stdout


def weights(model_dir, name):
    from safetensors.numpy import load_file

    return load_file(str(model_dir / "model.safetensors"))[name]


def test_wordpiece_uncased(tiny_transformer, tmp_path):
    model = Path(tiny_transformer)
    vocab = (model / "vocab.txt").read_text().splitlines()
    table = weights(model, "embeddings.word_embeddings.weight")
    vectors, report = build(model, tmp_path / "vectors")
    words = [w for w in vocab if not w.startswith("##") and not (w.startswith("[") and w.endswith("]"))]
    assert vectors.shape == (len(words), table.shape[1])
    assert "WordPiece" in report and "lower, Title and UPPER" in report
    for word in ("the", "said", "q"):
        expected = table[vocab.index(word)]
        for form in (word, word.title(), word.upper()):  # one row under the spellings an uncased model merges
            assert numpy.array_equal(vectors[spacy.blank("en").vocab.strings.add(form)], expected), form
    strings = spacy.blank("en").vocab.strings
    for piece in ("##a", "[CLS]", "[PAD]"):
        assert strings.add(piece) not in vectors.key2row


def test_byte_level_bpe_cased(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = tmp_path / "tiny_roberta"
    model.mkdir()
    vocab = {
        "<s>": 0,
        "<pad>": 1,
        "</s>": 2,
        "<unk>": 3,
        "Ġthe": 4,
        "the": 5,
        "ĠBaghdad": 6,
        "ĠcafÃ©": 7,  # " café": é is the bytes C3 A9, written Ã© in GPT-2's byte alphabet
        "ĠÃ": 8,  # half of a two-byte character: not a word
        "ing": 9,
        "Ġ": 10,
        "<mask>": 11,
    }
    (model / "vocab.json").write_text(json.dumps(vocab), encoding="utf8")
    (model / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizer"}))
    config = transformers.RobertaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
    )
    transformers.RobertaModel(config).save_pretrained(str(model))
    table = weights(model, "embeddings.word_embeddings.weight")
    vectors, report = build(model, tmp_path / "vectors")
    assert "byte-level BPE" in report and "as spelled" in report
    strings = spacy.blank("en").vocab.strings
    expected = {"the": 4, "Baghdad": 6, "café": 7}
    assert vectors.shape == (len(expected), 16)
    assert len(vectors.key2row) == len(expected)  # a cased vocabulary: no extra spellings
    for word, i in expected.items():  # the word-initial piece's row, not the text-initial "the" (5)
        assert numpy.array_equal(vectors[strings.add(word)], table[i]), word
    assert strings.add("baghdad") not in vectors.key2row


def test_missing_model_says_so(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "nowhere"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode != 0
    assert "nowhere" in result.stderr and "not a folder" in result.stderr


def test_a_hub_name_with_an_installed_copy_is_read_from_it(tiny_transformer, tmp_path, monkeypatch):
    """The default encoder's PyPI copy (OFFLINE_COPIES) is used without the Hub; a name without one goes to the
    Hub, and offline fails with the name and a hint, not silently."""
    import importlib.util
    import shutil

    spec = importlib.util.spec_from_file_location("encoder_vectors_script", SCRIPT)
    ev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ev)
    package = tmp_path / "site" / "fake_encoder_copy"
    shutil.copytree(tiny_transformer, package / "model")
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(ev, "OFFLINE_COPIES", {"someone/tiny-encoder": ("fake_encoder_copy", "model")})
    assert ev.resolve("someone/tiny-encoder") == package / "model"
    assert ev.resolve(tiny_transformer) == Path(tiny_transformer)  # a folder is a folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit, match="someone/other-encoder: not a folder, and the Hub did not give it"):
        ev.resolve("someone/other-encoder")


def test_the_vectors_meta_names_the_encoder_and_its_model_card_licence(tiny_transformer, tmp_path):
    import shutil

    model = tmp_path / "encoder"
    shutil.copytree(tiny_transformer, model)
    _, report = build(model, tmp_path / "no_card")
    meta = json.loads((tmp_path / "no_card/meta.json").read_text())
    assert meta["sources"] == [{"name": str(model), "url": "", "license": ""}]
    assert "the encoder's licence: not in its model card" in report
    (model / "README.md").write_text(
        "---\nlanguage: en\nlicense: apache-2.0\ntags:\n- x\n---\n# license: not this one\n"
    )
    _, report = build(model, tmp_path / "card")
    meta = json.loads((tmp_path / "card/meta.json").read_text())
    assert meta["license"] == "apache-2.0" and meta["sources"][0]["license"] == "apache-2.0"
    assert "the encoder's licence: apache-2.0" in report

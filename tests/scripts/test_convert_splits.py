"""scripts/convert_splits.py: the raw CoNLL-2003 files, else the Hub's copy (tested offline on a local copy in the
Hub's form: rows of sentences, ClassLabel tags, no -DOCSTART- rows)."""

import json
import sys

import pytest
from spacy.tokens import DocBin
from spacy.vocab import Vocab

from conll_crf.conll import read_conll_file
from tests.conftest import ROOT, SHARED_CONLL

sys.path.insert(0, str(ROOT / "scripts"))
import convert_splits  # noqa: E402

NER = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def hub_rows(path):
    """The rows the Hub's conll2003 holds for a raw file: one per sentence, IOB2 tags, the -DOCSTART- rows dropped."""
    articles, spans, _ = read_conll_file(path)
    rows = []
    for article, article_spans in zip(articles, spans):
        for sent, sent_spans in zip(article.sentences, article_spans):
            tags = ["O"] * len(sent.words)
            for start, end, label in sent_spans:
                tags[start] = f"B-{label}"
                tags[start + 1 : end] = [f"I-{label}"] * (end - start - 1)
            rows.append(
                {
                    "id": str(len(rows)),
                    "tokens": sent.words,
                    "pos_tags": [c[0] for c in sent.columns],
                    "ner_tags": [NER.index(t) for t in tags],
                }
            )
    return rows


@pytest.fixture(scope="module")
def hub_copy(tmp_path_factory):
    """A local folder in the form of eriktks/conll2003: train, validation and test parquet files."""
    datasets = pytest.importorskip("datasets")
    if not (SHARED_CONLL / "eng.testa").exists():
        pytest.skip("../shared/conll2003 is not beside the checkout")
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "tokens": datasets.Sequence(datasets.Value("string")),
            "pos_tags": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=NER)),
        }
    )
    folder = tmp_path_factory.mktemp("hub") / "conll2003"
    (folder / "data").mkdir(parents=True)
    dev_rows = hub_rows(SHARED_CONLL / "eng.testa")
    for split, rows in (("train", dev_rows[:600]), ("validation", dev_rows), ("test", dev_rows[600:900])):
        datasets.Dataset.from_list(rows, features=features).to_parquet(str(folder / "data" / f"{split}.parquet"))
    return folder


def test_without_raw_files_the_hub_copy_is_converted_one_doc_per_sentence_with_the_counts(hub_copy, tmp_path, capsys):
    out = tmp_path / "corpus"
    empty = tmp_path / "conll2003"
    empty.mkdir()
    assert convert_splits.main([str(empty), str(out), "--hf-dataset", str(hub_copy)]) == 0
    printed = capsys.readouterr().out
    assert f"no eng.train or eng.testa in {empty}" in printed and "one Doc per sentence" in printed
    stats = json.loads((out / "convert_stats.json").read_text())
    assert set(stats) == {"train", "dev", "test"}
    # the dev split is the whole of eng.testa: every sentence, token and entity of the raw file
    assert {k: stats["dev"][k] for k in ("sentences", "tokens", "entities")} == convert_splits.RAW_COUNTS["dev"]
    assert stats["dev"]["articles"] == 0 and stats["dev"]["docs"] == 3250
    dev_line = printed.split("dev    raw")[1].split("\n")
    assert "3,250" in dev_line[0] and "3,250" in dev_line[1] and "warning" not in dev_line[2]
    assert "train" in printed and "sentences, tokens, entities differ from the raw files" in printed  # a sample
    docs = list(DocBin().from_disk(out / "dev.spacy").get_docs(Vocab()))
    assert len(docs) == 3250 and all(sum(t.is_sent_start for t in d) == 1 for d in docs)
    assert sum(len(d.ents) for d in docs) == 5942


def test_raw_files_win_over_the_hub(tmp_path, capsys):
    src = tmp_path / "conll"
    src.mkdir()
    sample = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n"
    (src / "eng.train").write_text(sample)
    (src / "eng.testa").write_text(sample)
    assert convert_splits.main([str(src), str(tmp_path / "corpus"), "--hf-dataset", "no/such-dataset"]) == 0
    stats = json.loads((tmp_path / "corpus" / "convert_stats.json").read_text())
    assert stats["train"]["articles"] == 1 and stats["train"]["docs"] == 1 and "test" not in stats
    assert "eng.testb is missing" in capsys.readouterr().out


def test_neither_raw_files_nor_a_loadable_dataset_is_one_clear_error(tmp_path, capsys):
    pytest.importorskip("datasets")
    missing = tmp_path / "nowhere"
    assert convert_splits.main([str(tmp_path), str(tmp_path / "corpus"), "--hf-dataset", str(missing)]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "put eng.train and eng.testa in" in err
    assert convert_splits.main([str(tmp_path), str(tmp_path / "corpus")]) == 1
    assert f"no eng.train or eng.testa in {tmp_path}" in capsys.readouterr().err
    assert not (tmp_path / "corpus" / "convert_stats.json").exists()

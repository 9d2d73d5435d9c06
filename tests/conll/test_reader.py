"""CoNLL reader and scripts/convert.py: every format variant, every bad input,
the Hugging Face route, exact counts on the shared data, DocBin round trips."""

import json
import subprocess
import sys

import pytest
from spacy.tokens import DocBin
from spacy.vocab import Vocab

from conll_crf.conll import ConllError, docs_from_articles, read_conll_file, read_source
from conll_crf.tags import iob_spans, strict_spans
from tests.conftest import ROOT, SHARED_CONLL

CONVERT = ROOT / "scripts" / "convert.py"

# The same data (2 articles, 3 sentences, 4 entities) in every form found in the wild.
IOB1 = """-DOCSTART- -X- O O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- O O

BRUSSELS NNP I-NP I-LOC
1996-08-22 CD I-NP O
"""
EXPECTED = [  # per article, per sentence: (start, end, label)
    [[(0, 1, "ORG"), (2, 3, "MISC")], [(0, 2, "PER")]],
    [[(0, 1, "LOC")]],
]


def to_iob2(text):
    out, prev = [], "O"
    for line in text.split("\n"):
        cols = line.split()
        if len(cols) >= 2 and not cols[0].startswith("-DOCSTART-"):
            tag = cols[-1]
            if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
                cols[-1] = "B-" + tag[2:]
            prev = tag
            line = " ".join(cols)
        elif not cols:
            prev = "O"
        out.append(line)
    return "\n".join(out)


def to_scheme(text, last, unit):
    """IOB1 text -> BILUO (last="L", unit="U") or IOBES ("E", "S")."""
    lines = to_iob2(text).split("\n")
    cols = [line.split() for line in lines]
    for i, c in enumerate(cols):
        if len(c) < 2 or c[0] == "-DOCSTART-" or c[-1] == "O":
            continue
        nxt = cols[i + 1] if i + 1 < len(cols) else []
        continues = len(nxt) >= 2 and nxt[-1] == "I-" + c[-1][2:]
        if not continues:
            c[-1] = (unit if c[-1][0] == "B" else last) + c[-1][1:]
    return "\n".join(" ".join(c) for c in cols)


def two_columns(text):
    return "\n".join(
        line if not line.split() or line.startswith("-DOCSTART-") else f"{line.split()[0]} {line.split()[-1]}"
        for line in text.split("\n")
    )


VARIANTS = {
    "iob1-4col": IOB1,
    "iob2-4col": to_iob2(IOB1),
    "iob2-2col": two_columns(to_iob2(IOB1)),
    "biluo": to_scheme(IOB1, "L", "U"),
    "iobes": to_scheme(IOB1, "E", "S"),
    "docstart-X-X-O": IOB1.replace("-DOCSTART- -X- O O", "-DOCSTART- -X- -X- O"),
    "docstart-2col": two_columns(IOB1).replace("-DOCSTART- -X- O O", "-DOCSTART- O"),
    "no-leading-docstart": IOB1.split("\n", 2)[2],
    "crlf": IOB1.replace("\n", "\r\n"),
    "bom": "\ufeff" + IOB1,
    "blank-runs": IOB1.replace("\n\n", "\n\n\n\n"),
    "no-final-newline": IOB1.rstrip("\n"),
    "tabs": IOB1.replace(" ", "\t"),
    "mixed-whitespace": IOB1.replace(" ", " \t  "),
    "docstart-at-end": IOB1.split("\n", 2)[2] + "\n-DOCSTART- -X- O O",
    "cr-only": IOB1.replace("\n", "\r"),  # old Mac
    "mixed-line-ends": "".join(line + ("\r\n", "\r", "\n")[k % 3] for k, line in enumerate(IOB1.split("\n"))),
}


def write(tmp_path, text, name="data.conll", encoding="utf8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_format_variants_give_the_same_entities(tmp_path, name):
    articles, spans, stats = read_conll_file(write(tmp_path, VARIANTS[name]))
    assert spans == EXPECTED
    assert (stats.articles, stats.sentences, stats.tokens) == (2, 3, 9)
    assert dict(stats.entities) == {"ORG": 1, "MISC": 1, "PER": 1, "LOC": 1}
    assert articles[0].sentences[0].words == ["EU", "rejects", "German", "call", "."]
    assert stats.empty_articles == 0


def test_scheme_detection_and_repair_counts(tmp_path):
    _, _, s1 = read_conll_file(write(tmp_path, IOB1, "a"))
    _, _, s2 = read_conll_file(write(tmp_path, to_iob2(IOB1), "b"))
    _, _, s3 = read_conll_file(write(tmp_path, to_scheme(IOB1, "L", "U"), "c"))
    assert (s1.scheme, s1.repaired_tags) == ("IOB1", 4)
    assert (s2.scheme, s2.repaired_tags) == ("IOB2", 0)
    assert s3.scheme == "BILUO"


def test_iob1_b_tag_separates_touching_entities():
    spans, repaired = iob_spans(["I-PER", "I-PER", "B-PER", "I-PER", "I-LOC", "O", "I-LOC"])
    assert spans == [(0, 2, "PER"), (2, 4, "PER"), (4, 5, "LOC"), (6, 7, "LOC")]
    assert repaired == 3


def test_pos_and_chunk_columns_are_kept(tmp_path):
    (doc, *_) = docs_from_articles(Vocab(), *read_conll_file(write(tmp_path, IOB1))[:3])
    assert [t.tag_ for t in doc[:3]] == ["NNP", "VBZ", "JJ"]
    assert [t._.conll_chunk for t in doc[:3]] == ["I-NP", "I-VP", "I-NP"]
    assert [t.is_sent_start for t in doc] == [True, False, False, False, False, True, False]


def test_chunk_stays_with_its_token_through_retokenize_as_doc_and_docbin(tmp_path):
    (doc, *_) = docs_from_articles(Vocab(), *read_conll_file(write(tmp_path, IOB1))[:3])
    chunks = {t.text: t._.conll_chunk for t in doc}  # EU I-NP, rejects I-VP, German I-NP, call I-NP, . O
    with doc.retokenize() as retokenizer:
        retokenizer.merge(doc[0:2])  # "EU rejects": keeps the first token's chunk
    assert [(t.text, t._.conll_chunk) for t in doc[:4]] == [
        ("EU rejects", "I-NP"),
        ("German", chunks["German"]),
        ("call", chunks["call"]),
        (".", chunks["."]),
    ]
    sub = doc[2:4].as_doc(copy_user_data=True)
    assert [(t.text, t._.conll_chunk) for t in sub] == [("call", "I-NP"), (".", "O")]
    assert [t._.conll_chunk for t in doc[2:4].as_doc()] == [None, None]  # not copied: unknown, never wrong
    db = DocBin(store_user_data=True, docs=[doc])
    (back,) = DocBin().from_bytes(db.to_bytes()).get_docs(Vocab())
    assert [t._.conll_chunk for t in back] == [t._.conll_chunk for t in doc]


@pytest.mark.parametrize("docs,expected", [("article", [7, 2]), ("sentence", [5, 2, 2]), (2, [7, 2])])
def test_docs_option(tmp_path, docs, expected):
    articles, spans, stats = read_conll_file(write(tmp_path, IOB1))
    out = list(docs_from_articles(Vocab(), articles, spans, stats, docs))
    assert [len(d) for d in out] == expected
    assert stats.docs == len(expected)


@pytest.mark.parametrize("docs,expected", [("article", [5, 2, 2]), ("sentence", [5, 2, 2]), (2, [7, 2])])
def test_a_file_without_docstart_is_one_doc_per_sentence_not_one_doc(tmp_path, docs, expected):
    """No -DOCSTART- rows (WNUT, most corpora other than CoNLL-2003): the article boundaries are unknown, so
    'article' falls back to sentences; N sentences per Doc where the user knows they belong together."""
    text = "\n".join(line for line in IOB1.split("\n") if not line.startswith("-DOCSTART-"))
    path = write(tmp_path, text)
    articles, spans, stats, grouping = read_source(str(path), docs=docs)
    out = list(docs_from_articles(Vocab(), articles, spans, stats, grouping))
    assert [len(d) for d in out] == expected and stats.articles == 0
    assert (stats.sentences, stats.tokens) == (3, 9)
    assert sum(len(d.ents) for d in out) == 4
    result = run_convert(path, tmp_path / "out.spacy")
    assert result.returncode == 0 and "3 docs" in result.stdout and "one Doc per sentence" in result.stdout


BAD = {
    "single-column": (IOB1.replace("rejects VBZ I-VP O", "rejects"), 4, "1 column"),
    "bad-tag": (IOB1.replace("call NN I-NP O", "call NN I-NP X-PER"), 6, "invalid NER tag 'X-PER'"),
    "no-type": (IOB1.replace("call NN I-NP O", "call NN I-NP B-"), 6, "invalid NER tag 'B-'"),
    "lowercase-o": (IOB1.replace("call NN I-NP O", "call NN I-NP o"), 6, "invalid NER tag 'o'"),
    "stray-U-in-iob": (
        IOB1.replace("BRUSSELS NNP I-NP I-LOC", "BRUSSELS NNP I-NP U-LOC"),
        14,
        "tag 'U-LOC' is not an IOB tag",
    ),
    "column-count": (IOB1.replace("call NN I-NP O", "call NN O"), 6, "3 columns"),
    "biluo-unfinished": (
        to_scheme(IOB1, "L", "U").replace("Blackburn NNP I-NP L-PER", "Blackburn NNP I-NP O"),
        10,
        "unfinished PER",
    ),
    "mixed-biluo-iobes": (to_scheme(IOB1, "L", "U").replace("U-LOC", "S-LOC"), 14, "mix"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_names_file_and_line(tmp_path, name):
    text, line, what = BAD[name]
    path = write(tmp_path, text)
    with pytest.raises(ConllError) as err:
        read_conll_file(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert what in msg, msg


def test_undecodable_bytes(tmp_path):
    data = IOB1.encode("utf8").replace(b"German", b"G\xe9rman")
    path = write(tmp_path, data)
    with pytest.raises(ConllError) as err:
        read_conll_file(path)
    assert str(err.value).startswith(f"{path}:5: bytes b'\\xe9' are not valid UTF-8")


def test_cr_only_line_numbers_in_errors(tmp_path):
    path = write(tmp_path, IOB1.replace("\n", "\r").replace("call NN I-NP O", "call NN I-NP"))
    with pytest.raises(ConllError, match=rf"^{path}:6: line has 3 columns"):
        read_conll_file(path)
    path = write(tmp_path, IOB1.replace("\n", "\r").encode("utf8").replace(b"German", b"G\xe9rman"), "b")
    with pytest.raises(ConllError, match=rf"^{path}:5: bytes"):
        read_conll_file(path)


def test_tab_separated_tokens_may_hold_spaces(tmp_path):
    text = "-DOCSTART-\tO\n\nHe\tO\nflew\tO\nto\tO\nNew York\tB-LOC\n.\tO\n"
    articles, spans, stats = read_conll_file(write(tmp_path, text))
    assert articles[0].sentences[0].words == ["He", "flew", "to", "New York", "."]
    assert spans == [[[(3, 4, "LOC")]]]
    # a space-separated line in a tab-separated file is blamed, on its own line
    bad = write(tmp_path, text.replace("to\tO", "to O"), "bad")
    with pytest.raises(ConllError, match=rf"^{bad}:5: line has 1 column \('to O'\); .*separated by tabs, as line 3"):
        read_conll_file(bad)
    # --sep space reads it as before: "New York" then makes 3 columns, and that line is the one named
    with pytest.raises(ConllError, match=rf"^{bad}:6: line has 3 columns"):
        read_conll_file(bad, sep="space")


@pytest.mark.parametrize("text", ["", "\n\n", "-DOCSTART- -X- O O\n\n"])
def test_empty_file(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConllError, match=rf"^{path}:1: no tokens"):
        read_conll_file(path)


def run_convert(*args):
    return subprocess.run([sys.executable, str(CONVERT), *map(str, args)], capture_output=True, text=True)


def test_cli_bad_input_exits_nonzero_without_output(tmp_path):
    path = write(tmp_path, BAD["bad-tag"][0])
    out = tmp_path / "out.spacy"
    result = run_convert(path, out)
    assert result.returncode == 1
    assert f"{path}:6: invalid NER tag 'X-PER'" in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.spacy*"))


def test_cli_summary_and_docbin_round_trip(tmp_path):
    path = write(tmp_path, VARIANTS["crlf"])
    out, stats_path = tmp_path / "out.spacy", tmp_path / "stats.json"
    result = run_convert(path, out, "--stats-json", stats_path)
    assert result.returncode == 0, result.stderr
    assert "2 articles, 3 sentences, 9 tokens" in result.stdout
    stats = json.loads(stats_path.read_text())
    assert stats["entities"] == 4 and stats["entities_per_type"] == {"LOC": 1, "MISC": 1, "ORG": 1, "PER": 1}
    docs = list(DocBin().from_disk(out).get_docs(Vocab()))
    assert [[(e.start, e.end, e.label_) for e in d.ents] for d in docs] == [
        [(0, 1, "ORG"), (2, 3, "MISC"), (5, 7, "PER")],
        [(0, 1, "LOC")],
    ]
    assert [t._.conll_chunk for t in docs[1]] == ["I-NP", "I-NP"]


HF_ROWS = [
    {"tokens": ["-DOCSTART-"], "ner_tags": [0]},
    {"tokens": ["EU", "rejects", "German", "call", "."], "ner_tags": [3, 0, 7, 0, 0]},
    {"tokens": ["Peter", "Blackburn"], "ner_tags": [1, 2]},
    {"tokens": ["-DOCSTART-"], "ner_tags": [0]},
    {"tokens": ["BRUSSELS", "1996-08-22"], "ner_tags": [5, 0]},
]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_hugging_face_local_file(tmp_path, suffix):
    datasets = pytest.importorskip("datasets")
    path = tmp_path / f"train{suffix}"
    ds = datasets.Dataset.from_list(HF_ROWS)
    if suffix == ".jsonl":
        ds.to_json(str(path))
    else:
        ds.to_parquet(str(path))
    articles, spans, stats, docs = read_source(str(path), split="train")
    assert spans == EXPECTED and docs == "article"
    assert (stats.articles, stats.sentences, stats.tokens, stats.scheme) == (2, 3, 9, "IOB2")


def test_hugging_face_classlabel_names_and_no_articles(tmp_path):
    datasets = pytest.importorskip("datasets")
    names = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]  # a non-standard order, from the ClassLabel
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
        }
    )
    ds = datasets.Dataset.from_list([{"tokens": ["Peter", "in", "Paris"], "ner_tags": [3, 0, 1]}], features=features)
    path = tmp_path / "data.arrow"
    ds.save_to_disk(str(tmp_path / "saved"))
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    arrow.rename(path)
    articles, spans, stats, docs = read_source(str(path))
    assert spans == [[[(0, 1, "PER"), (2, 3, "LOC")]]]
    assert docs == "sentence" and stats.articles == 0


def test_hugging_face_bad_tag_index(tmp_path):
    datasets = pytest.importorskip("datasets")
    path = tmp_path / "bad.jsonl"
    datasets.Dataset.from_list([{"tokens": ["a"], "ner_tags": [0]}, {"tokens": ["b"], "ner_tags": [42]}]).to_json(
        str(path)
    )
    with pytest.raises(ConllError, match=rf"^{path}\[train\]:2: ner tag 42"):
        read_source(str(path))


def test_strict_biluo_decoding():
    assert strict_spans(["B-PER", "I-PER", "L-PER", "U-LOC", "O"], "BILUO") == [(0, 3, "PER"), (3, 4, "LOC")]
    assert strict_spans(["B-PER", "E-PER", "S-LOC"], "IOBES") == [(0, 2, "PER"), (2, 3, "LOC")]


SHARED_COUNTS = {
    "eng.train": (946, 14041, 203621, {"PER": 6600, "LOC": 7140, "ORG": 6321, "MISC": 3438}),
    "eng.testa": (216, 3250, 51362, {"PER": 1842, "LOC": 1837, "ORG": 1341, "MISC": 922}),
}


@pytest.mark.skipif(not SHARED_CONLL.exists(), reason=f"{SHARED_CONLL} not present (licence-restricted data)")
@pytest.mark.parametrize("name", sorted(SHARED_COUNTS))
def test_exact_counts_on_conll2003(tmp_path, name):
    articles, sents, tokens, ents = SHARED_COUNTS[name]
    out, stats_path = tmp_path / "out.spacy", tmp_path / "stats.json"
    result = run_convert(SHARED_CONLL / name, out, "--stats-json", stats_path)
    assert result.returncode == 0, result.stderr
    stats = json.loads(stats_path.read_text())
    assert (stats["articles"], stats["sentences"], stats["tokens"]) == (articles, sents, tokens)
    assert stats["entities_per_type"] == dict(sorted(ents.items()))
    assert stats["entities"] == sum(ents.values())
    # round trip: the DocBin holds exactly the spans decoded from the source tags
    src_articles, src_spans, _ = read_conll_file(SHARED_CONLL / name)
    docs = list(DocBin().from_disk(out).get_docs(Vocab()))
    assert len(docs) == articles
    for doc, article, spans in zip(docs, src_articles, src_spans):
        offsets = [0]
        for sent in article.sentences:
            offsets.append(offsets[-1] + len(sent.words))
        expected = [
            (offsets[i] + s, offsets[i] + e, label) for i, sent_spans in enumerate(spans) for s, e, label in sent_spans
        ]
        assert [(e.start, e.end, e.label_) for e in doc.ents] == expected
        assert [t.text for t in doc] == [w for sent in article.sentences for w in sent.words]
        assert sum(1 for t in doc if t.is_sent_start) == len(article.sentences)

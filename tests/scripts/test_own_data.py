"""The `own` workflow end to end: a corpus made for the test, with labels other than CoNLL's (hyphenated, WNUT-style),
no -DOCSTART- lines and another language, through convert, train, evaluate, calibrate and package."""

import json
import os
import random
import sys
from pathlib import Path

import pytest
import spacy

from tests.scripts.test_workflow import copy_project, run

PEOPLE = [["Anna", "Berg"], ["Jonas"], ["Marta", "Klein"], ["Luis"], ["Eva", "Stein"], ["Tom", "Hahn"]]
WORKS = [["Der", "Prozess"], ["Faust"], ["Die", "Blechtrommel"], ["Momo"], ["Siddhartha"]]
PRODUCTS = [["iPhone"], ["Golf", "GTI"], ["PlayStation", "5"], ["Kindle"], ["Thermomix"]]
TEMPLATES = [
    ["{person}", "liest", "{work}", "."],
    ["{person}", "kauft", "ein", "{product}", "."],
    ["Heute", "hat", "{person}", "{work}", "gelesen", "."],
    ["Das", "{product}", "von", "{person}", "ist", "neu", "."],
    ["Niemand", "mag", "{work}", "."],
]
SLOTS = {"person": ("person", PEOPLE), "work": ("creative-work", WORKS), "product": ("product", PRODUCTS)}


def sentences(n: int, seed: int):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        rows = []
        for part in rng.choice(TEMPLATES):
            if part.startswith("{"):
                label, names = SLOTS[part[1:-1]]
                words = rng.choice(names)
                rows += [(w, ("B-" if i == 0 else "I-") + label) for i, w in enumerate(words)]
            else:
                rows.append((part, "O"))
        out.append(rows)
    return out


def write_conll(path: Path, sents) -> None:
    """Two tab-separated columns, no -DOCSTART- line (as WNUT-17 and most corpora other than CoNLL-2003)."""
    path.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in sents) + "\n")


@pytest.mark.slow
def test_own_workflow_with_other_labels_and_language(tmp_path):
    project = copy_project(tmp_path / "project")
    data = tmp_path / "data"
    data.mkdir()
    train_sents, dev_sents = sentences(120, 0), sentences(30, 1)
    write_conll(data / "train.txt", train_sents)
    write_conll(data / "dev.txt", dev_sents)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "spacy", "project", "run", "own", "."]
    cmd += ["--vars.own_train", str(data / "train.txt"), "--vars.own_dev", str(data / "dev.txt")]
    cmd += ["--vars.own_lang", "de", "--vars.own_name", "wnut_like", "--vars.max_steps", "100"]
    out = run(cmd, project, env).stdout
    assert "one Doc per sentence" in out  # no -DOCSTART-: one Doc per sentence, said so
    stats = json.loads((project / "corpus/own/train_stats.json").read_text())
    n_ents = sum(1 for s in train_sents for _, t in s if t.startswith("B-"))
    assert (stats["docs"], stats["sentences"], stats["entities"]) == (120, 120, n_ents)
    assert set(stats["entities_per_type"]) == {"creative-work", "person", "product"}

    nlp = spacy.load(project / "training/own/model-calibrated")
    assert nlp.lang == "de" and set(nlp.get_pipe("crf_ner").labels) == {"creative-work", "person", "product"}
    gold = json.loads((project / "metrics/own/gold_tokens.json").read_text())
    assert gold["invalid_tag_sequences"] == {"crf_ner": 0} and gold["entities_across_sentence_starts"] == 0
    assert set(gold["ents_per_type"]) <= {"creative-work", "person", "product"} and gold["ents_f"] > 0.5
    calibration = json.loads((project / "metrics/own/calibration/calibration.json").read_text())
    assert calibration["temperature"] > 0
    assert nlp.get_pipe("crf_ner").temperature == pytest.approx(calibration["temperature"])
    doc = nlp("Anna Berg liest Faust .")
    assert all(0 < e._.crf_prob <= 1 for e in doc.ents)
    wheels = sorted(p.name for p in (project / "packages/own/dist").glob("*.whl"))
    assert [w.split("-")[0] for w in wheels] == ["de_wnut_like", "spacy_conll_crf"]
    meta = json.loads((project / "packages/own/meta_wnut_like.json").read_text())
    assert meta["sources"][0]["name"] == "your own data" and "creative-work" in meta["description"]

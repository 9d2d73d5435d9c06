"""End to end: `spacy project run all` on a small CoNLL sample with tiny settings,
then the packaged wheels installed in a fresh virtual environment (no checkout
on its path) where `spacy.load("en_conll_crf")` must find entities."""

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT

PROJECT_FILES = ["project.yml", "setup.cfg", "pyproject.toml", "README.md", "configs", "scripts", "components"]
SENTENCES = [
    [
        ("U.N.", "I-ORG"),
        ("official", "O"),
        ("Ekeus", "I-PER"),
        ("heads", "O"),
        ("for", "O"),
        ("Baghdad", "I-LOC"),
        (".", "O"),
    ],
    [("Peter", "I-PER"), ("Blackburn", "I-PER"), ("works", "O"), ("in", "O"), ("Brussels", "I-LOC"), (".", "O")],
    [("EU", "I-ORG"), ("rejects", "O"), ("German", "I-MISC"), ("call", "O"), (".", "O")],
    [
        ("Ekeus", "I-PER"),
        ("said", "O"),
        ("the", "O"),
        ("U.N.", "I-ORG"),
        ("met", "O"),
        ("in", "O"),
        ("Baghdad", "I-LOC"),
        (".", "O"),
    ],
]
TEXT = "U.N. official Ekeus heads for Baghdad."


def write_sample(path: Path, n_articles: int) -> None:
    lines = []
    for a in range(n_articles):
        lines += ["-DOCSTART- -X- -X- O", ""]
        for sent in SENTENCES[a % 2 :] + SENTENCES[: a % 2]:
            lines += [f"{w} NNP I-NP {t}" for w, t in sent] + [""]
    path.write_text("\n".join(lines))


def copy_project(project: Path) -> Path:
    """The project's own files (no corpus, training or packages) copied into a new folder `project`."""
    project.mkdir()
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, project / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, project / name)
    return project


def run(cmd, cwd, env=None, timeout=900):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.mark.slow
def test_project_all_then_clean_venv_load(tmp_path, tiny_transformer):
    project = copy_project(tmp_path / "project")
    data = tmp_path / "conll"
    data.mkdir()
    write_sample(data / "eng.train", 12)
    write_sample(data / "eng.testa", 2)  # no eng.testb: evaluation falls back to dev
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # the static vectors of configs/cpu_crf.cfg from a local encoder's embedding table (the default is a Hub name)
    spacy_run = [
        sys.executable,
        "-m",
        "spacy",
        "project",
        "run",
        "all",
        ".",
        "--vars.conll_dir",
        str(data),
        "--vars.max_steps",
        "200",
        "--vars.vectors_encoder",
        tiny_transformer,
        "--vars.word_table_rows",
        "2000",
    ]
    out = run(spacy_run, project, env).stdout
    assert "eng.testb is missing" in out
    assert "whole-word vectors" in out  # the vectors step ran before training
    gold = json.loads((project / "metrics/cpu_crf/gold_tokens.json").read_text())
    raw = json.loads((project / "metrics/cpu_crf/raw_text.json").read_text())
    for scores in (gold, raw):
        assert set(scores) >= {"ents_p", "ents_r", "ents_f", "ents_per_type", "words_per_second"}
    assert gold["conlleval_agrees"] and gold["invalid_tag_sequences"] == {"crf_ner": 0}
    assert gold["entities_across_sentence_starts"] == 0
    assert gold["ents_f"] > 0.5
    wheels = sorted(p.name for p in (project / "packages/dist").glob("*.whl"))
    assert [w.split("-")[0] for w in wheels] == ["en_conll_crf", "spacy_conll_crf"]
    # the main job's steps choose their recipe when they run (scripts/main_job.py: no_skip) and say which and why
    for step in ("train", "evaluate", "calibrate", "package"):
        assert f"main job, {step}: cpu_crf on the CPU" in out
    # run again, the up-to-date data steps (convert, vectors) are skipped
    for step in ("convert", "vectors"):
        again = run([*spacy_run[:5], step, *spacy_run[6:]], project, env).stdout
        assert f"Skipping '{step}'" in again

    # the in-process reference prediction
    import spacy

    expected = [(e.text, e.label_) for e in spacy.load(project / "training/cpu_crf/model-best")(TEXT).ents]
    assert expected, "the tiny model should find entities in a sentence it was trained on"

    # fresh venv, no system site-packages, no checkout on the path
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    run(
        [str(py), "-m", "pip", "install", "-q", "torch==2.13.0", *map(str, (project / "packages/dist").glob("*.whl"))],
        tmp_path,
    )
    code = (
        "import json, spacy, conll_crf; nlp = spacy.load('en_conll_crf'); doc = nlp(%r); "
        "print(json.dumps({'file': conll_crf.__file__, 'ents': [[e.text, e.label_] for e in doc.ents], "
        "'meta': nlp.meta, 'vectors': list(nlp.vocab.vectors.shape)}))" % TEXT
    )
    clean_env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = json.loads(run([str(py), "-I", "-c", code], tmp_path, clean_env).stdout)
    assert result["file"].startswith(str(env_dir))
    trained_vectors = spacy.load(project / "training/cpu_crf/model-best").vocab.vectors.shape
    assert trained_vectors[0] > 0 and result["vectors"] == list(trained_vectors)  # the static vectors are packaged
    assert [tuple(e) for e in result["ents"]] == expected
    meta = result["meta"]
    assert meta["name"] == "conll_crf" and any("spacy-conll-crf" in r for r in meta["requirements"])
    assert "CoNLL-2003" in meta["sources"][0]["name"] and "ents_f" in meta["performance"]


def test_spacy_train_writes_no_log_of_another_run_and_train_py_writes_its_own(tmp_path, tiny_transformer):
    """configs/cpu_crf.cfg with `spacy train --output elsewhere` must not write (or truncate) a
    training/cpu_crf/log.jsonl; scripts/train.py logs into its own output folder."""
    data = tmp_path / "conll"
    data.mkdir()
    write_sample(data / "eng.train", 2)
    run(
        [sys.executable, str(ROOT / "scripts/convert.py"), str(data / "eng.train"), str(tmp_path / "tiny.spacy")],
        tmp_path,
    )
    # the config's static vectors and word table, where it looks for them (assets/encoder_vectors and
    # assets/glove_6b_50d, from the cwd)
    run(
        [
            sys.executable,
            str(ROOT / "scripts/encoder_vectors.py"),
            tiny_transformer,
            str(tmp_path / "assets/encoder_vectors"),
        ],
        tmp_path,
    )
    run(
        [sys.executable, str(ROOT / "scripts/word_table.py"), str(tmp_path / "assets/glove_6b_50d"), "--rows", "2000"],
        tmp_path,
    )
    (tmp_path / "training/cpu_crf").mkdir(parents=True)
    real_log = tmp_path / "training/cpu_crf/log.jsonl"
    real_log.write_text('{"step": 0}\n')  # the real run's log, in the place v1 configs wrote it
    corpus = [
        "--paths.train",
        str(tmp_path / "tiny.spacy"),
        "--paths.dev",
        str(tmp_path / "tiny.spacy"),
        "--training.max_steps",
        "2",
        "--training.eval_frequency",
        "1",
    ]
    run(
        [
            sys.executable,
            "-m",
            "spacy",
            "train",
            str(ROOT / "configs/cpu_crf.cfg"),
            "--output",
            str(tmp_path / "other"),
            *corpus,
        ],
        tmp_path,
    )
    assert real_log.read_text() == '{"step": 0}\n' and not (tmp_path / "other/log.jsonl").exists()
    run(
        [
            sys.executable,
            str(ROOT / "scripts/train.py"),
            str(ROOT / "configs/cpu_crf.cfg"),
            str(tmp_path / "own"),
            "--train",
            str(tmp_path / "tiny.spacy"),
            "--dev",
            str(tmp_path / "tiny.spacy"),
            "--max-steps",
            "2",
            "--training.eval_frequency",
            "1",
        ],
        tmp_path,
    )
    steps = [json.loads(line)["step"] for line in (tmp_path / "own/log.jsonl").read_text().splitlines()]
    assert steps and steps[-1] == 2
    assert real_log.read_text() == '{"step": 0}\n'


def test_train_py_says_what_to_run_when_the_static_vectors_are_missing(tmp_path):
    """configs/cpu_crf.cfg reads assets/encoder_vectors: missing from the working directory and the project, train.py
    stops at once with the command that builds them (not spaCy's E050 deep inside training)."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/train.py"),
            str(ROOT / "configs/cpu_crf.cfg"),
            str(tmp_path / "out"),
            "--paths.vectors",
            "assets/no_such_vectors",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "'assets/no_such_vectors' do not exist" in result.stderr and "spacy project run vectors" in result.stderr
    # the exact overrides that train without them, wherever the config's embed block sits
    assert "--paths.vectors null --paths.word_table null --components.crf_ner.model." in result.stderr
    assert ".embed.include_static_vectors false" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    ["configs/trf_crf", "configs/trf_ner", "experiments/configs/trf_crf_plain", "experiments/configs/trf_ner_plain"],
)
def test_transformer_configs_train_and_predict(tmp_path, tiny_transformer, config):
    """Each transformer config (the shipped trf_crf / trf_ner with spelling features, and the plain recipe
    of the experiments) trains a few steps on a tiny local transformer through scripts/train.py, and the
    saved pipeline predicts entities, with probabilities for crf_ner."""
    import hashlib

    import spacy
    from thinc.api import Config

    data = tmp_path / "conll"
    data.mkdir()
    write_sample(data / "eng.train", 4)
    write_sample(data / "eng.testa", 2)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run([sys.executable, str(ROOT / "scripts/convert_splits.py"), str(data), str(tmp_path / "corpus")], tmp_path, env)
    out = tmp_path / "out"
    run(
        [
            sys.executable,
            str(ROOT / "scripts/train.py"),
            str(ROOT / f"{config}.cfg"),
            str(out),
            "--transformer",
            tiny_transformer,
            "--max-steps",
            "4",
            "--training.eval_frequency",
            "2",
            "--train",
            str(tmp_path / "corpus/train.spacy"),
            "--dev",
            str(tmp_path / "corpus/dev.spacy"),
            "--training.optimizer.learn_rate.warmup_steps",
            "1",
            "--training.optimizer.learn_rate.total_steps",
            "4",
        ],
        tmp_path,
        env,
    )
    meta = json.loads((out / "train_meta.json").read_text())
    parsed = Config().from_disk(ROOT / f"{config}.cfg", interpolate=False).to_str()
    assert meta["config_sha256"] == hashlib.sha256(parsed.encode("utf8")).hexdigest()  # what seeds.py compares
    nlp = spacy.load(out / "model-last")
    doc = nlp(TEXT)
    name = "crf_ner" if Path(config).name.startswith("trf_crf") else "ner"
    assert nlp.pipe_names == ["transformer", name]
    spelling = [node for node in nlp.get_pipe(name).model.walk() if node.name == "with_spelling"]
    assert bool(spelling) == (not config.endswith("_plain"))
    if name == "crf_ner":
        assert all(0.0 <= p <= 1.0 for p in doc.spans["crf_ner"].attrs["scores"])

"""experiments/scripts/seeds.py summarize: means, spreads, leads on shared seeds, and --previous."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def fake_run(runs, name, seed, gold, raw, dev, minutes=10.0):
    run = runs / f"{name}_s{seed}"
    (run / "eval").mkdir(parents=True)
    (run / "log.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"step": 0, "score": 0.0},
                {"step": 200, "score": dev / 100},
                {"step": 400, "score": dev / 100 - 0.01},
            ]
        )
        + "\n"
    )
    gold_json = {
        "ents_f": gold / 100,
        "conlleval": {"ents_f": gold / 100},
        "invalid_tag_sequences": {"x": 0},
        "entities_across_sentence_starts": 0,
    }
    (run / "eval/gold_tokens.json").write_text(json.dumps(gold_json))
    (run / "eval/raw_text.json").write_text(json.dumps({"ents_f": raw / 100}))
    (run / "eval/raw_text_sentencizer.json").write_text(json.dumps({"ents_f": raw / 100}))
    (run / "train_meta.json").write_text(json.dumps({"wall_seconds": minutes * 60}))


def summarize(runs, out, *extra):
    cmd = [
        sys.executable,
        str(ROOT / "experiments/scripts/seeds.py"),
        "summarize",
        "--runs",
        str(runs),
        "--json",
        str(out),
        *extra,
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.read_text())


def test_summarize_leads_use_shared_seeds_and_previous_keeps_old_runs(tmp_path):
    runs = tmp_path / "runs"
    for seed, (g, r, d) in {1: (90.0, 89.0, 89.5), 2: (91.0, 90.0, 90.5), 3: (92.0, 91.0, 91.5)}.items():
        fake_run(runs, "crf", seed, g, r, d)
    for seed, (g, r, d) in {1: (89.0, 88.5, 89.0), 2: (89.5, 88.0, 89.0)}.items():
        fake_run(runs, "ner", seed, g, r, d)
    first = summarize(runs, tmp_path / "first.json", "--pair", "crf=ner")
    crf = first["crf"]
    assert crf["seeds"] == [1, 2, 3]
    assert crf["gold_f"]["mean"] == pytest.approx(91.0) and crf["gold_f"]["sd"] == pytest.approx(1.0)
    assert crf["lead_seeds"] == [1, 2]  # seed 3 has no baseline: left out of the lead
    assert crf["lead_gold_f"]["mean"] == pytest.approx(((90 - 89) + (91 - 89.5)) / 2)
    assert crf["lead_raw_f"]["mean"] == pytest.approx(((89 - 88.5) + (90 - 88)) / 2)
    assert "lead_seeds" not in first["ner"]

    # a clean checkout: the old runs are gone, a new group is trained; --previous keeps the old rows exactly
    new_runs = tmp_path / "new_runs"
    fake_run(new_runs, "crf_vec", 1, 93.0, 92.0, 92.5)
    fake_run(new_runs, "ner", 1, 88.0, 87.0, 88.0)  # on disk: wins over the previous summary's seed 1
    second = summarize(
        new_runs,
        tmp_path / "second.json",
        "--pair",
        "crf=ner",
        "--pair",
        "crf_vec=ner",
        "--previous",
        str(tmp_path / "first.json"),
    )
    assert set(second) == {"crf", "ner", "crf_vec"}
    assert second["crf"]["gold_f"] == first["crf"]["gold_f"]
    assert second["ner"]["runs"]["1"]["gold_f"] == pytest.approx(88.0)
    assert second["ner"]["runs"]["2"] == first["ner"]["runs"]["2"]
    assert second["crf_vec"]["lead_gold_f"]["mean"] == pytest.approx(93.0 - 88.0)

    # --drop forgets an earlier group; a missing --previous file or runs folder is not an error
    third = summarize(new_runs, tmp_path / "third.json", "--previous", str(tmp_path / "first.json"), "--drop", "crf")
    assert set(third) == {"ner", "crf_vec"}
    fourth = summarize(tmp_path / "no_runs", tmp_path / "fourth.json", "--previous", str(tmp_path / "first.json"))
    assert fourth["crf"]["gold_f"] == first["crf"]["gold_f"]
    fifth = summarize(new_runs, tmp_path / "fifth.json", "--previous", str(tmp_path / "missing.json"))
    assert set(fifth) == {"ner", "crf_vec"}


def test_pairs_figure_draws_each_shipped_row_against_its_baseline(tmp_path):
    runs = tmp_path / "runs"
    for seed in (1, 2):
        fake_run(runs, "crf", seed, 91.0 + seed, 90.0, 90.5)
        fake_run(runs, "ner", seed, 90.0, 89.0, 89.5)
    png = tmp_path / "pairs.png"
    summarize(runs, tmp_path / "s.json", "--pair", "crf=ner", "--shipped", "crf", "--pairs-png", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a row without a baseline cannot be drawn against one: named, and nothing written
    cmd = [
        sys.executable,
        str(ROOT / "experiments/scripts/seeds.py"),
        "summarize",
        "--runs",
        str(runs),
        "--pair",
        "crf=ner",
        "--shipped",
        "ner",
        "--pairs-png",
        str(tmp_path / "no.png"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode != 0 and "--shipped ner" in result.stderr and not (tmp_path / "no.png").exists()


def test_summarize_refuses_to_average_two_recipes(tmp_path):
    """The seeds of one run name trained with different overrides: summarize stops and names the setting."""
    runs = tmp_path / "runs"
    for seed, dropout in [(1, 0.2), (2, 0.2), (3, 0.3)]:
        fake_run(runs, "crf", seed, 90.0, 89.0, 89.5)
        (runs / f"crf_s{seed}/train_meta.json").write_text(
            json.dumps(
                {
                    "config": "/somewhere/configs/cpu_crf.cfg",
                    "wall_seconds": 600,
                    "overrides": {
                        "system.seed": seed,
                        "training.seed": seed,
                        "paths.log": f"/runs/crf_s{seed}/log.jsonl",
                        "components.crf_ner.model.tok2vec.embed.word_dropout": dropout,
                    },
                }
            )
        )
    cmd = [sys.executable, str(ROOT / "experiments/scripts/seeds.py"), "summarize", "--runs", str(runs)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode != 0
    assert "crf: its seeds were trained with different settings" in result.stderr
    assert "--components.crf_ner.model.tok2vec.embed.word_dropout: s1=0.2, s2=0.2, s3=0.3" in result.stderr
    # the same recipe on every seed (seeds and log paths differ by design): summarized
    meta = json.loads((runs / "crf_s3/train_meta.json").read_text())
    meta["overrides"]["components.crf_ner.model.tok2vec.embed.word_dropout"] = 0.2
    (runs / "crf_s3/train_meta.json").write_text(json.dumps(meta))
    assert summarize(runs, tmp_path / "ok.json")["crf"]["seeds"] == [1, 2, 3]


def test_summarize_follows_a_renamed_config_by_its_hash(tmp_path):
    """Seeds trained from the same settings under two config file names (a config renamed between them) are one
    recipe when train.py recorded the parsed config's hash; different hashes are two recipes."""
    runs = tmp_path / "runs"
    for seed, name, sha in [(1, "trf_ner_spelling.cfg", "abc"), (2, "trf_ner.cfg", "abc")]:
        fake_run(runs, "ner", seed, 90.0, 89.0, 89.5)
        (runs / f"ner_s{seed}/train_meta.json").write_text(
            json.dumps(
                {
                    "config": f"/x/configs/{name}",
                    "config_sha256": sha,
                    "wall_seconds": 600,
                    "overrides": {"system.seed": seed, "training.seed": seed},
                }
            )
        )
    assert summarize(runs, tmp_path / "ok.json")["ner"]["seeds"] == [1, 2]
    meta = json.loads((runs / "ner_s2/train_meta.json").read_text())
    meta["config_sha256"] = "def"
    (runs / "ner_s2/train_meta.json").write_text(json.dumps(meta))
    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments/scripts/seeds.py"), "summarize", "--runs", str(runs)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "config_sha256: s1='abc', s2='def'" in result.stderr


def write_meta(run, config, seed, sha=None, **overrides):
    meta = {
        "config": f"/x/configs/{config}",
        "wall_seconds": 600,
        "overrides": {"system.seed": seed, "training.seed": seed, **overrides},
    }
    if sha:
        meta["config_sha256"] = sha
    (run / "train_meta.json").write_text(json.dumps(meta))


def test_previous_keeps_recipes_and_checks_new_seeds_against_them(tmp_path):
    """Seeds 1-2 summarized, then gone from disk; seed 3 trained later with another setting under the same
    name: the summary that would average them stops. A seed kept from a summary without recipes is named."""
    runs = tmp_path / "runs"
    for seed in (1, 2):
        fake_run(runs, "crf", seed, 90.0, 89.0, 89.5)
        write_meta(runs / f"crf_s{seed}", "cpu_crf.cfg", seed, sha="abc", **{"components.x": 0.2})
    first = summarize(runs, tmp_path / "first.json")
    assert first["crf"]["recipes"]["1"] == {
        "config_file": "cpu_crf.cfg",
        "config_sha256": "abc",
        "--components.x": 0.2,
        "trained_config_sha256": None,
    }  # no saved model in this fake run

    later = tmp_path / "later"
    fake_run(later, "crf", 3, 91.0, 90.0, 90.5)
    write_meta(later / "crf_s3", "cpu_crf.cfg", 3, sha="abc", **{"components.x": 0.3})
    cmd = [
        sys.executable,
        str(ROOT / "experiments/scripts/seeds.py"),
        "summarize",
        "--runs",
        str(later),
        "--previous",
        str(tmp_path / "first.json"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode != 0 and "--components.x: s1=0.2, s2=0.2, s3=0.3" in result.stderr
    write_meta(
        later / "crf_s3", "cpu_crf.cfg", 3, sha="abc", **{"components.x": 0.2}
    )  # the same recipe: kept and averaged
    second = summarize(later, tmp_path / "second.json", "--previous", str(tmp_path / "first.json"))
    assert second["crf"]["seeds"] == [1, 2, 3] and set(second["crf"]["recipes"]) == {"1", "2", "3"}

    # an older summary without recipes: its seeds are kept, named as unchecked
    old = json.loads((tmp_path / "first.json").read_text())
    del old["crf"]["recipes"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    cmd[-1] = str(tmp_path / "old.json")
    result = subprocess.run(cmd + ["--json", str(tmp_path / "third.json")], capture_output=True, text=True, check=True)
    assert "crf: the recipe of seed(s) 1, 2 is not recorded" in result.stdout
    assert json.loads((tmp_path / "third.json").read_text())["crf"]["recipes"] == {
        "1": None,
        "2": None,
        "3": second["crf"]["recipes"]["3"],
    }


def test_recipes_compare_by_file_name_when_a_hash_is_missing(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "crf", 1, 90.0, 89.0, 89.5)
    write_meta(runs / "crf_s1", "cpu_crf.cfg", 1)  # recorded before train.py hashed configs
    fake_run(runs, "crf", 2, 90.0, 89.0, 89.5)
    write_meta(runs / "crf_s2", "cpu_crf.cfg", 2, sha="abc")
    assert summarize(runs, tmp_path / "ok.json")["crf"]["seeds"] == [1, 2]
    write_meta(runs / "crf_s2", "cpu_crf_other.cfg", 2, sha="abc")
    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments/scripts/seeds.py"), "summarize", "--runs", str(runs)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "config_file: s1='cpu_crf.cfg', s2='cpu_crf_other.cfg'" in result.stderr


def test_recipes_compare_by_the_config_each_seed_was_trained_with(tmp_path):
    """The saved model's config (file and overrides together) decides where every seed has one: a renamed file
    recorded without a hash is the same recipe when the trained configs agree (seeds, log paths and the folders of
    path settings aside), and two recipes when a setting differs."""
    runs = tmp_path / "runs"
    cfg = (
        '[paths]\nvectors = "{vec}"\nlog = "{log}"\n\n[system]\nseed = {seed}\n\n'
        "[training]\nseed = {seed}\ndropout = {dropout}\n"
    )
    for seed, name, vec in [
        (1, "trf_spelling.cfg", "/a/assets/encoder_vectors"),
        (2, "trf.cfg", "assets/encoder_vectors"),
    ]:
        fake_run(runs, "crf", seed, 90.0, 89.0, 89.5)
        write_meta(runs / f"crf_s{seed}", name, seed, sha=None if seed == 1 else "abc")
        (runs / f"crf_s{seed}/model-best").mkdir()
        (runs / f"crf_s{seed}/model-best/config.cfg").write_text(
            cfg.format(vec=vec, log=f"/x/crf_s{seed}/log.jsonl", seed=seed, dropout=0.1)
        )
    assert summarize(runs, tmp_path / "ok.json")["crf"]["seeds"] == [1, 2]
    (runs / "crf_s2/model-best/config.cfg").write_text(cfg.format(vec="v", log="l", seed=2, dropout=0.2))
    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments/scripts/seeds.py"), "summarize", "--runs", str(runs)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "trained_config_sha256" in result.stderr


def test_the_recipe_hash_ignores_how_memory_is_kept(tmp_path):
    """retain_freed_memory (a crf_ner setting that changes no result) does not make two recipes of one config."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("seeds_script", ROOT / "experiments/scripts/seeds.py")
    seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeds)
    base = (
        "[paths]\nlog = null\n\n[system]\nseed = 1\n\n"
        '[components]\n\n[components.crf_ner]\nfactory = "crf_ner"\nscheme = "BIO"\n'
    )
    hashes = []
    for name, extra in (("old", ""), ("new", "retain_freed_memory = true\n"), ("off", "retain_freed_memory = false\n")):
        (tmp_path / name / "model-best").mkdir(parents=True)
        (tmp_path / name / "model-best/config.cfg").write_text(base + extra)
        hashes.append(seeds.trained_config_sha256(tmp_path / name))
    assert hashes[0] == hashes[1] == hashes[2]
    (tmp_path / "biluo/model-best").mkdir(parents=True)
    (tmp_path / "biluo/model-best/config.cfg").write_text(base.replace("BIO", "BILUO"))
    assert seeds.trained_config_sha256(tmp_path / "biluo") != hashes[0]

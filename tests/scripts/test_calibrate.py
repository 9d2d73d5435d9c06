"""The calibration metrics of scripts/calibrate.py, against their definitions."""

import importlib.util
import itertools

import numpy
import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("calibrate_script", ROOT / "scripts" / "calibrate.py")
calibrate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(calibrate)


def test_ece_by_hand():
    conf = numpy.array([0.05, 0.05, 0.95, 0.95, 0.95, 0.5])
    correct = numpy.array([False, True, True, True, False, True])
    # bins: 0 -> {0.05, 0.05} acc 0.5; 14 -> {0.95 x3} acc 2/3; 7 -> {0.5} acc 1
    want = 2 / 6 * abs(0.5 - 0.05) + 3 / 6 * abs(2 / 3 - 0.95) + 1 / 6 * abs(1 - 0.5)
    assert calibrate.ece(conf, correct) == pytest.approx(want)
    assert calibrate.ece(numpy.array([1.0, 1.0]), numpy.array([True, True])) == 0.0


def test_auroc_and_average_precision_match_their_definitions():
    rng = numpy.random.default_rng(0)
    conf = rng.choice([0.1, 0.3, 0.5, 0.7, 0.9], size=60)
    correct = rng.random(60) < conf
    pos, neg = conf[correct], conf[~correct]
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    assert calibrate.auroc(conf, correct) == pytest.approx(numpy.mean(pairs))
    # distinct scores: AP = mean over positives of the precision at their rank
    conf = rng.random(40)
    correct = rng.random(40) < 0.6
    order = numpy.argsort(-conf)
    hits = correct[order]
    want = numpy.mean([hits[: i + 1].mean() for i in range(len(hits)) if hits[i]])
    assert calibrate.average_precision(conf, correct) == pytest.approx(want)
    assert calibrate.average_precision(numpy.array([0.9, 0.1]), numpy.array([True, False])) == 1.0


def test_ece_floor_is_the_noise_of_a_calibrated_model():
    """Confidences 0 or 1 leave no noise (floor 0); many mid confidences give a floor that shrinks with the count."""
    assert calibrate.ece_floor(numpy.array([0.0, 1.0, 1.0])) == 0.0
    rng = numpy.random.default_rng(1)
    small, large = rng.uniform(0.3, 1.0, 300), rng.uniform(0.3, 1.0, 30000)
    f_small, f_large = calibrate.ece_floor(small, draws=50), calibrate.ece_floor(large, draws=20)
    assert 0.0 < f_large < f_small < 0.1
    assert f_small / f_large == pytest.approx(10, rel=0.5)  # 1/sqrt(n): 100x the entities, about a tenth the floor


def test_temperature_scan_reports_every_grid_point():
    class Item:  # what temperature_scan reads of a DocEntities: probs(T) and correct
        def __init__(self, logits, correct):
            self.logits, self.correct = numpy.asarray(logits, dtype=float), numpy.asarray(correct, dtype=bool)

        def probs(self, t):
            return 1 / (1 + numpy.exp(-self.logits / t))

    items = [Item([4.0, 2.0, -1.0], [True, True, False]), Item([3.0], [False])]
    rows = calibrate.temperature_scan(items)
    assert [r["temperature"] for r in rows] == sorted(calibrate.SCAN_TEMPERATURES)
    around = calibrate.temperature_scan(items, around=1.153)
    assert [r["temperature"] for r in around] == calibrate.scan_grid(1.153)
    conf = numpy.concatenate([i.probs(2.0) for i in items])
    correct = numpy.array([True, True, False, False])
    at2 = next(r for r in rows if r["temperature"] == 2.0)
    assert at2["ece"] == pytest.approx(calibrate.ece(conf, correct))
    assert at2["brier"] == pytest.approx(((conf - correct) ** 2).mean())
    assert at2["mean_confidence"] == pytest.approx(conf.mean())
    assert (
        calibrate.temperature_scan([])[0]["mean_confidence"] != calibrate.temperature_scan([])[0]["mean_confidence"]
    )  # NaN


def test_scan_grid_is_fine_around_the_fitted_temperature():
    """The fixed grid is coarse below 1.5; around the fitted temperature the scan steps by 0.01 and includes the
    fitted value itself, so its lowest ECE is never above the ECE at the fitted temperature."""
    grid = calibrate.scan_grid(1.153)
    assert grid == sorted(set(grid))
    assert set(calibrate.SCAN_TEMPERATURES) <= set(grid)
    assert 1.153 in grid
    assert all(round(1.15 + 0.01 * k, 2) in grid for k in range(-15, 16))
    assert calibrate.scan_grid() == sorted(calibrate.SCAN_TEMPERATURES)
    assert min(calibrate.scan_grid(0.05)) > 0 and min(calibrate.scan_grid(0.053)) > 0  # 0.053 - 0.05 rounds to 0.00


def test_metrics_record_the_reliability_bins_the_ece_is_computed_from():
    """The report keeps each bin's mean confidence, accuracy and count, and the ECE is their weighted gap."""
    rng = numpy.random.default_rng(3)
    conf = rng.uniform(0.0, 1.0, 500)
    correct = rng.random(500) < conf**2
    m = calibrate.metrics(conf, correct)
    bins = m["reliability"]
    assert sum(b["entities"] for b in bins) == 500
    assert all(
        0 <= b["bin_center"] <= 1 and abs(b["mean_confidence"] - b["bin_center"]) <= 0.5 / calibrate.N_BINS
        for b in bins
    )
    assert sum(b["entities"] / 500 * abs(b["accuracy"] - b["mean_confidence"]) for b in bins) == pytest.approx(m["ece"])
    assert calibrate.metrics(numpy.zeros(0), numpy.zeros(0, dtype=bool))["reliability"] == []


def test_isotonic_fit_is_pool_adjacent_violators():
    """Non-decreasing block accuracies that pool exactly the violating runs; the map interpolates between blocks."""
    conf = numpy.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    correct = numpy.array([0, 1, 0, 0, 1, 1], dtype=bool)
    xs, ys = calibrate.isotonic_fit(conf, correct)
    # 0.1 -> 0; then 0.2, 0.3, 0.4 pool (1, 0, 0 -> 1/3); 0.5, 0.6 stay at 1 each, and pool since equal
    assert ys.tolist() == pytest.approx([0.0, 1 / 3, 1.0])
    assert xs.tolist() == pytest.approx([0.1, 0.3, 0.55])
    assert numpy.all(numpy.diff(ys) >= 0)
    assert calibrate.isotonic_apply((xs, ys), numpy.array([0.0, 0.2, 0.3, 0.9])).tolist() == pytest.approx(
        [0.0, 1 / 6, 1 / 3, 1.0]
    )
    # on random data: the knots strictly increase and the values never decrease
    rng = numpy.random.default_rng(5)
    c = rng.uniform(0, 1, 400)
    y = rng.random(400) < c
    xs, ys = calibrate.isotonic_fit(c, y)
    assert numpy.all(numpy.diff(ys) >= 0) and numpy.all(numpy.diff(xs) > 0)
    assert calibrate.isotonic_apply((numpy.zeros(0), numpy.zeros(0)), c).tolist() == c.tolist()


def test_calibrate_with_the_training_names_writes_two_temperatures(tmp_path):
    """`calibrate --train`: the seen/unseen report, and temperature and temperature_unseen in the written config."""
    import subprocess
    import sys

    import spacy
    from spacy.tokens import DocBin

    from tests.pipeline.test_component import TRAIN_DATA, crf_config, examples, train

    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config=crf_config())
    train(nlp, n_iter=30)
    nlp.to_disk(tmp_path / "model")
    refs = [eg.reference for eg in examples(nlp)]
    DocBin(docs=refs[:2]).to_disk(tmp_path / "train.spacy")  # the others' names are unseen
    DocBin(docs=refs * 3).to_disk(tmp_path / "dev.spacy")
    cmd = [sys.executable, str(ROOT / "scripts/calibrate.py"), str(tmp_path / "model"), str(tmp_path / "dev.spacy")]
    cmd += [str(tmp_path / "out"), "--train", str(tmp_path / "train.spacy"), "--write", str(tmp_path / "calibrated")]
    subprocess.run(cmd, check=True, capture_output=True)
    report = __import__("json").loads((tmp_path / "out" / "calibration.json").read_text())
    shift = report["seen_unseen"]
    assert shift["counts"]["seen"] > 0 and shift["counts"]["unseen"] > 0 and len(TRAIN_DATA) == 4
    written = spacy.load(tmp_path / "calibrated").config["components"]["crf_ner"]
    assert written["temperature"] == shift["seen_unseen_T_on_all"]["temperature"]
    assert written["temperature_unseen"] == shift["seen_unseen_T_on_all"]["temperature_unseen"]


def test_thresholds_pick_the_lowest_cut_that_reaches_the_precision():
    spec = importlib.util.spec_from_file_location("thresholds_script", ROOT / "scripts" / "thresholds.py")
    thresholds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(thresholds)
    probs = numpy.array([0.99, 0.95, 0.9, 0.9, 0.8, 0.6, 0.5])
    correct = numpy.array([1, 1, 1, 0, 1, 0, 1], dtype=bool)
    # precision at or above each cut: 0.99 -> 1, 0.95 -> 1, 0.9 -> 3/4, 0.8 -> 4/5, 0.6 -> 4/6, 0.5 -> 5/7
    assert thresholds.pick(probs, correct, 0.8) == 0.8
    assert thresholds.pick(probs, correct, 0.75) == 0.8  # ties at 0.9 are kept or dropped together
    assert thresholds.pick(probs, correct, 1.0) == 0.95
    assert thresholds.pick(numpy.array([0.7]), numpy.array([False]), 0.5) == 1.0  # never reached


def test_shift_report_cross_fits_over_folds_of_articles():
    """scripts/calibration_shift.py: with K folds every entity is scored by temperatures fitted without its
    article (K per procedure part), and K = 2 is the halves of the shuffled articles."""
    spec = importlib.util.spec_from_file_location("shift_script", ROOT / "scripts" / "calibration_shift.py")
    shift = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shift)
    rng = numpy.random.default_rng(0)

    class Span:
        def __init__(self, text):
            self.text = text

    class Doc:  # d[s:e].text is the entity's text
        def __init__(self, texts):
            self.texts = texts

        def __getitem__(self, sl):
            return Span(self.texts[sl.start])

    class Items:  # calibrate.DocEntities' interface: keys, correct, probs(T)
        def __init__(self, n):
            self.keys = [(i, i + 1, "PER") for i in range(n)]
            self.logit = rng.normal(3, 1, size=n)
            self.correct = rng.random(n) < 1 / (1 + numpy.exp(-self.logit / 2))

        def probs(self, t):
            return 1 / (1 + numpy.exp(-self.logit / t))

    items = [Items(int(n)) for n in rng.integers(3, 9, size=21)]  # an odd number: the halves are 10 and 11
    docs = [Doc([f"name{rng.integers(0, 6)}" for _ in it.keys]) for it in items]
    names = {"name0", "name1", "name2"}
    for folds in (2, 5):
        report = shift.shift_report(items, docs, names, seed=3, folds=folds)
        assert report["folds"] == folds
        assert len(report["one_T_cross_fitted"]["temperatures"]) == folds
        assert len(report["seen_unseen_T_cross_fitted"]["temperatures"]) == 2 * folds
        counts = report["counts"]
        assert report["seen_unseen_T_cross_fitted"]["all"]["entities"] == counts["predicted"]
        assert counts["seen"] + counts["unseen"] == counts["predicted"] == sum(len(it.keys) for it in items)
    # K = 2: the first half of the shuffled articles is one fold
    import random

    order = list(range(len(items)))
    random.Random(3).shuffle(order)
    correct = numpy.concatenate([it.correct for it in items])
    article = numpy.array([i for i, it in enumerate(items) for _ in it.keys])
    half = numpy.isin(article, order[: len(order) // 2])
    probs = numpy.stack([numpy.concatenate([it.probs(float(t)) for it in items]) for t in shift.GRID])
    want = [round(float(shift.GRID[shift.fit(probs, correct, m)]), 3) for m in (half, ~half)]
    conf = numpy.where(half, probs[shift.fit(probs, correct, ~half)], probs[shift.fit(probs, correct, half)])
    report = shift.shift_report(items, docs, names, seed=3)["one_T_cross_fitted"]
    assert report["temperatures"] == want and report["all"] == shift.summary(conf, correct)
    with pytest.raises(ValueError, match="folds"):
        shift.shift_report(items, docs, names, folds=1)
    # over several split seeds: each cross-fitted ECE's mean and sd over the seeds' reports
    reports = [shift.shift_report(items, docs, names, seed=s, folds=5) for s in (0, 1, 2)]
    over = shift.over_seeds(reports, [0, 1, 2])
    values = [r["seen_unseen_T_cross_fitted"]["unseen"]["ece"] for r in reports]
    assert over["seen_unseen_T_cross_fitted"]["unseen"]["values"] == values
    assert over["seen_unseen_T_cross_fitted"]["unseen"]["ece_mean"] == pytest.approx(numpy.mean(values), abs=1e-4)


def test_shift_summary_sets_each_ece_beside_its_noise_floor():
    """scripts/calibration_shift.py: a calibrated part's ECE sits inside the floor's spread, an over-confident
    one's above all of it."""
    spec = importlib.util.spec_from_file_location("shift_script", ROOT / "scripts" / "calibration_shift.py")
    shift = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shift)
    rng = numpy.random.default_rng(1)
    conf = rng.uniform(0.3, 1.0, size=2000)
    calibrated = shift.summary(conf, rng.random(2000) < conf)
    assert 0 < calibrated["ece_if_calibrated"] < 0.05
    assert calibrated["p_calibrated"] > 0.05
    over_confident = shift.summary(conf, rng.random(2000) < conf - 0.1)
    assert over_confident["ece"] > 0.08 and over_confident["p_calibrated"] == 0.0
    empty = shift.summary(conf[:0], conf[:0] > 0)
    assert empty["entities"] == 0 and set(empty) == set(calibrated)

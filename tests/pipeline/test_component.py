"""The crf_ner component, in the manner of spaCy's own pipeline tests."""

from pathlib import Path

import numpy
import pytest
import spacy
import torch
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import registry
from thinc.api import fix_random_seed

from conll_crf.pipeline.component import CRFEntityRecognizer
from conll_crf.pipeline.head import BiLSTMCRFModule
from conll_crf.tags import build_tags, iob_spans

TRAIN_DATA = [
    (
        "Peter Blackburn works for the European Commission in Brussels .",
        [(0, 15, "PER"), (30, 49, "ORG"), (53, 61, "LOC")],
    ),
    ("EU rejects German call to boycott British lamb .", [(0, 2, "ORG"), (11, 17, "MISC"), (34, 41, "MISC")]),
    ("U.N. official Ekeus heads for Baghdad .", [(0, 4, "ORG"), (14, 19, "PER"), (30, 37, "LOC")]),
    ("Germany 's representative to the European Union said on Wednesday .", [(0, 7, "LOC"), (33, 47, "ORG")]),
]

SMALL_TOK2VEC = {
    "@architectures": "spacy.HashEmbedCNN.v2",
    "width": 48,
    "depth": 2,
    "embed_size": 1000,
    "window_size": 1,
    "maxout_pieces": 3,
    "subword_features": True,
    "pretrained_vectors": None,
}


def crf_config(scheme="BIO", architecture="conll_crf.BiLSTMCRF.v2", depth=1):
    return {
        "scheme": scheme,
        "model": {
            "@architectures": architecture,
            "hidden_width": 32,
            "depth": depth,
            "dropout": 0.0,
            "tok2vec": SMALL_TOK2VEC,
        },
    }


def examples(nlp):
    return [Example.from_dict(nlp.make_doc(text), {"entities": ents}) for text, ents in TRAIN_DATA]


def gold_ents():
    return [[(text[s:e], label) for s, e, label in ents] for text, ents in TRAIN_DATA]


def ents(doc):
    return [(e.text, e.label_) for e in doc.ents]


def train(nlp, n_iter=60):
    fix_random_seed(0)
    train_examples = examples(nlp)
    optimizer = nlp.initialize(get_examples=lambda: train_examples)
    losses_seen = []
    for _ in range(n_iter):
        losses = {}
        nlp.update(train_examples, sgd=optimizer, losses=losses)
        losses_seen.append(losses["crf_ner"])
    return losses_seen


def saved_crf_pipeline(path, n_iter=60):
    """A blank English pipeline with a crf_ner (`crf_config()`) trained `n_iter` steps, saved to `path`."""
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config=crf_config())
    train(nlp, n_iter=n_iter)
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def trained_nlp():
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config=crf_config())
    train(nlp)
    return nlp


def test_factory_and_entry_points():
    assert "crf_ner" in registry.factories.get_all()
    for name in (
        "BiLSTMCRF.v1",
        "BiLSTMCRF.v2",
        "BiLSTMCRF.v3",
        "HashCharEmbed.v1",
        "HashCharEmbed.v2",
        "HashCharEmbed.v3",
        "HashCharEmbed.v4",
        "HashCharEmbed.v5",
        "HashCharCNNEmbed.v1",
        "WithSpelling.v1",
    ):
        assert registry.architectures.get(f"conll_crf.{name}")
    assert registry.loggers.get("conll_crf.JSONLLogger.v1") and registry.loggers.get("conll_crf.JSONLLogger.v2")
    assert registry.augmenters.get("conll_crf.raw_text_augmenter.v1")
    meta = Language.get_factory_meta("crf_ner")
    assert "doc.ents" in meta.assigns and meta.default_score_weights["ents_f"] == 1.0
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("crf_ner")  # the default config builds
    assert isinstance(pipe, CRFEntityRecognizer)


def test_every_registered_name_is_an_entry_point():
    """setup.cfg declares an entry point for every name the package registers, in
    the registry's group, pointing at the registered function (so spaCy finds a
    config's names without importing conll_crf first)."""
    import configparser
    import importlib
    import re

    root = Path(__file__).resolve().parents[2]
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    declared = {}
    for group, block in cfg["options.entry_points"].items():
        for line in block.strip().splitlines():
            name, target = (part.strip() for part in line.split("=", 1))
            declared[(group, name)] = target
    registered = set()
    for path in sorted((root / "components" / "conll_crf").rglob("*.py")):
        for kind, name in re.findall(r'@registry\.(\w+)\("(conll_crf\.[^"]+)"\)', path.read_text()):
            registered.add((f"spacy_{kind}", name))
    assert registered, "no registered names found"
    missing = sorted(registered - set(declared))
    assert not missing, f"registered but not in setup.cfg's entry points: {missing}"
    for group, name in registered:
        module, attr = declared[(group, name)].split(":")
        function = importlib.import_module(module)
        for part in attr.split("."):
            function = getattr(function, part)
        assert getattr(registry, group[len("spacy_") :]).get(name) is function, (group, name)


def test_labels_and_bad_scheme():
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("crf_ner")
    assert pipe.add_label("PER") == 1 and pipe.add_label("PER") == 0
    assert pipe.tags == ["O", "B-PER", "I-PER"]
    with pytest.raises(ValueError):
        spacy.blank("en").add_pipe("crf_ner", config={"scheme": "IOBES"})
    with pytest.raises(ValueError, match="no entity labels"):
        spacy.blank("en").add_pipe("crf_ner").initialize(lambda: [Example.from_dict(nlp.make_doc("a b"), {})])


@pytest.mark.parametrize(
    "scheme,architecture",
    [("BIO", "conll_crf.BiLSTMCRF.v2"), ("BILUO", "conll_crf.BiLSTMCRF.v2"), ("BIO", "conll_crf.BiLSTMCRF.v1")],
)
def test_overfitting_cpu(scheme, architecture):
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config=crf_config(scheme, architecture))
    losses = train(nlp)
    assert losses[-1] < losses[0] / 50
    assert [ents(d) for d in nlp.pipe(t for t, _ in TRAIN_DATA)] == gold_ents()


def test_skip_connection_v3():
    """BiLSTMCRF.v3 with skip: the output layer reads [BiLSTM output; its input],
    it learns, and the option survives to_bytes/from_bytes with identical
    predictions; skip = false is v2 weight for weight; skip without a BiLSTM is refused."""
    from conll_crf.pipeline.thinc_head import torch_module

    nlp = spacy.blank("en")
    config = crf_config(architecture="conll_crf.BiLSTMCRF.v3")
    config["model"]["skip"] = True
    nlp.add_pipe("crf_ner", config=config)
    train(nlp)
    module = torch_module(nlp.get_pipe("crf_ner").model.get_ref("output_layer"))
    assert module.cfg["skip"] and module.output.in_features == 2 * 32 + module.cfg["n_in"]
    assert [ents(d) for d in nlp.pipe(t for t, _ in TRAIN_DATA)] == gold_ents()
    texts = [t for t, _ in TRAIN_DATA] + ["Mr. Smith flew to Paris from London ."]
    before = [(ents(d), list(d.spans["crf_ner"].attrs["scores"])) for d in nlp.pipe(texts)]
    nlp2 = spacy.blank("en")
    nlp2.add_pipe("crf_ner", config=config)
    nlp2.from_bytes(nlp.to_bytes())
    assert torch_module(nlp2.get_pipe("crf_ner").model.get_ref("output_layer")).cfg["skip"]
    assert [(ents(d), list(d.spans["crf_ner"].attrs["scores"])) for d in nlp2.pipe(texts)] == before

    params = {}
    for architecture, extra in (("conll_crf.BiLSTMCRF.v2", {}), ("conll_crf.BiLSTMCRF.v3", {"skip": False})):
        fix_random_seed(3)
        nlp = spacy.blank("en")
        config = crf_config(architecture=architecture)
        config["model"].update(extra)
        nlp.add_pipe("crf_ner", config=config)
        nlp.initialize(lambda: examples(nlp))
        params[architecture] = torch_module(nlp.get_pipe("crf_ner").model.get_ref("output_layer")).state_dict()
    v2, v3 = params.values()
    assert v2.keys() == v3.keys() and all(torch.equal(v2[k], v3[k]) for k in v2)
    with pytest.raises(ValueError, match="depth >= 1"):
        BiLSTMCRFModule(8, 0, 0.0, skip=True)


def test_skip_connection_module_paths():
    """The skip connection at depth 2 with dropout: the padded [B, T', D] and the
    ragged [N, D] inputs give the same emissions, gradients reach the input
    through both paths, and a saved module from before `skip` existed (no key
    in its cfg) loads as skip = false."""
    import json as json_module

    from safetensors.torch import save as st_save

    from conll_crf.pipeline.thinc_head import (
        _safetensors_metadata,
        deserialize_module,
        serialize_module,
    )

    torch.manual_seed(0)
    module = BiLSTMCRFModule(6, 2, 0.3, skip=True)
    module.build(5, ["O", "B-X", "I-X"], "BIO")
    assert module.output.in_features == 2 * 6 + 5
    lengths = torch.tensor([4, 0, 2, 3])
    rows = torch.randn(int(lengths.sum()), 5, dtype=torch.float32, requires_grad=True)
    padded = torch.zeros(4, 6, 5)
    offset = 0
    for b, n in enumerate(lengths.tolist()):
        padded[b, :n] = rows.detach()[offset : offset + n]
        offset += n
    em_rows, em_padded = module.emissions(rows, lengths), module.emissions(padded, lengths)
    assert torch.allclose(em_rows, em_padded, atol=1e-6)
    em_rows = module.emissions(rows, lengths, train=True)
    em_rows.sum().backward()
    assert rows.grad is not None and bool((rows.grad != 0).any())

    plain = BiLSTMCRFModule(6, 1, 0.0)
    plain.build(5, ["O", "B-X", "I-X"], "BIO")
    blob = serialize_module(plain)
    meta = _safetensors_metadata(blob)
    cfg = json_module.loads(meta["cfg"])
    del cfg["skip"]  # as saved by the releases before BiLSTMCRF.v3
    old = st_save(
        {k: v.detach().contiguous() for k, v in plain.state_dict().items()},
        metadata={**meta, "cfg": json_module.dumps(cfg)},
    )
    loaded = deserialize_module(BiLSTMCRFModule(1, 1, 0.0), old, "cpu")
    assert loaded.cfg["skip"] is False and loaded.output.in_features == 12
    plain.eval()
    loaded.eval()
    x = torch.randn(7, 5)
    assert torch.equal(plain.emissions(x, torch.tensor([7])), loaded.emissions(x, torch.tensor([7])))


def test_overfitting_without_lstm():
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config=crf_config(depth=0))
    train(nlp, n_iter=80)
    assert [ents(d) for d in nlp.pipe(t for t, _ in TRAIN_DATA)] == gold_ents()


def add_tiny_transformer(nlp, tiny_transformer: str) -> None:
    """A transformer component over the local tiny encoder (strided spans of 16 wordpieces)."""
    nlp.add_pipe(
        "transformer",
        config={
            "model": {
                "@architectures": "spacy-transformers.TransformerModel.v3",
                "name": tiny_transformer,
                "tokenizer_config": {"use_fast": True},
                "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 16, "stride": 12},
            }
        },
    )


def transformer_pipeline(tiny_transformer: str):
    """A blank English pipeline: a transformer (the local tiny one) and crf_ner listening to it."""
    nlp = spacy.blank("en")
    add_tiny_transformer(nlp, tiny_transformer)
    config = crf_config()
    config["model"]["tok2vec"] = {
        "@architectures": "spacy-transformers.TransformerListener.v1",
        "grad_factor": 1.0,
        "pooling": {"@layers": "reduce_mean.v1"},
        "upstream": "*",
    }
    nlp.add_pipe("crf_ner", config=config)
    return nlp


def test_overfitting_transformer(tiny_transformer):
    pytest.importorskip("spacy_transformers")
    nlp = transformer_pipeline(tiny_transformer)
    fix_random_seed(0)
    train_examples = examples(nlp)
    optimizer = nlp.initialize(get_examples=lambda: train_examples)
    optimizer.learn_rate = 0.005
    first = None
    for _ in range(80):
        losses = {}
        nlp.update(train_examples, sgd=optimizer, losses=losses)
        first = first if first is not None else losses["crf_ner"]
    assert losses["crf_ner"] < first / 20
    assert [ents(d) for d in nlp.pipe(t for t, _ in TRAIN_DATA)] == gold_ents()
    # a doc longer than the transformer's window (strided spans) still gets entities
    long_text = " ".join([TRAIN_DATA[0][0]] * 30)
    doc = nlp(long_text)
    assert len(doc) == 300 and len(doc.ents) >= 60
    # entity probabilities with the transformer too
    assert all(0 < e._.crf_prob <= 1 + 1e-9 for e in doc.ents)
    assert len(doc.spans["crf_ner"]) >= len(doc.ents)
    # batch invariance and a bytes round trip, transformer included
    texts = [t for t, _ in TRAIN_DATA] + [long_text, ""]
    alone = [ents(nlp(t)) for t in texts]
    assert [ents(d) for d in nlp.pipe(texts, batch_size=100)] == alone
    nlp2 = spacy.util.load_model_from_config(nlp.config).from_bytes(nlp.to_bytes())
    assert [ents(d) for d in nlp2.pipe(texts)] == alone


def test_batch_invariance(trained_nlp):
    texts = [t for t, _ in TRAIN_DATA] + [
        "",
        " ",
        "Brussels",
        "A much longer sentence about Peter Blackburn and the EU in Brussels . " * 5,
    ]
    alone = [ents(trained_nlp(t)) for t in texts]
    for batch_size in (1, 2, 3, 100):
        assert [ents(d) for d in trained_nlp.pipe(texts, batch_size=batch_size)] == alone
    assert [ents(d) for d in trained_nlp.pipe(reversed(texts), batch_size=100)] == alone[::-1]


def test_pipe_predicts_length_sorted_sub_batches_and_yields_in_order(trained_nlp, monkeypatch):
    """As spaCy's parser: a batch is predicted a quarter at a time, shortest docs first; docs come back in the
    order given, with the probabilities they get alone; a failing batch goes to the error handler whole."""
    pipe = trained_nlp.get_pipe("crf_ner")
    texts = [t for t, _ in TRAIN_DATA] * 3 + ["Brussels", "", "Peter Blackburn went to Brussels . " * 4]
    alone = [(ents(d), [round(p, 5) for p in d.spans["crf_ner"].attrs["scores"]]) for d in map(trained_nlp, texts)]
    seen = []
    predict = pipe.predict
    monkeypatch.setattr(pipe, "predict", lambda docs: seen.append([len(d) for d in docs]) or predict(docs))
    docs = list(trained_nlp.pipe(texts, batch_size=8))
    assert [(ents(d), [round(p, 5) for p in d.spans["crf_ner"].attrs["scores"]]) for d in docs] == alone
    assert [d.text for d in docs] == texts
    lengths = [len(trained_nlp.make_doc(t)) for t in texts]
    want = [sorted(lengths[i : i + 8])[j : j + 2] for i in range(0, len(texts), 8) for j in range(0, 8, 2)]
    assert seen == [sub for sub in want if sub]
    failed = []
    monkeypatch.setattr(pipe, "predict", lambda docs: 1 / 0)
    pipe.set_error_handler(lambda name, proc, docs, e: failed.append((name, len(docs), type(e))))
    try:
        assert list(pipe.pipe([trained_nlp.make_doc(t) for t in texts[:5]], batch_size=4)) == []
    finally:
        pipe.set_error_handler(spacy.util.raise_error)
    assert failed == [("crf_ner", 4, ZeroDivisionError), ("crf_ner", 1, ZeroDivisionError)]


def test_predict_does_not_mutate_docs(trained_nlp):
    pipe = trained_nlp.get_pipe("crf_ner")
    doc = trained_nlp.make_doc(TRAIN_DATA[0][0])
    pipe.predict([doc])
    assert doc.ents == ()


def test_round_trips(trained_nlp, tmp_path):
    texts = [t for t, _ in TRAIN_DATA]
    before = [ents(d) for d in trained_nlp.pipe(texts)]
    trained_nlp.to_disk(tmp_path / "nlp")
    nlp2 = spacy.load(tmp_path / "nlp")
    assert [ents(d) for d in nlp2.pipe(texts)] == before
    nlp3 = spacy.blank("en")
    nlp3.add_pipe("crf_ner", config=crf_config())
    nlp3.from_bytes(trained_nlp.to_bytes())
    assert [ents(d) for d in nlp3.pipe(texts)] == before
    pipe_bytes = trained_nlp.get_pipe("crf_ner").to_bytes()
    pipe4 = spacy.blank("en").add_pipe("crf_ner", config=crf_config()).from_bytes(pipe_bytes)
    assert pipe4.labels == trained_nlp.get_pipe("crf_ner").labels
    # the weights are safetensors, never a pickle
    weights = (tmp_path / "nlp" / "crf_ner" / "model").read_bytes()
    assert b'"__metadata__"' in weights  # a safetensors header
    assert b"PK\x03\x04" not in weights  # no torch.save (zip + pickle) archive


def test_empty_whitespace_one_token_and_long_docs(trained_nlp):
    assert ents(trained_nlp("")) == []
    docs = list(trained_nlp.pipe(["", "", ""]))
    assert all(d.ents == () for d in docs)
    doc = trained_nlp("Peter   Blackburn \n\n Brussels")
    assert all(not t.is_space for e in doc.ents for t in e)
    assert len(trained_nlp("Brussels")) == 1
    words = ("Peter Blackburn works for the European Commission in Brussels .".split()) * 2000
    long_doc = trained_nlp(Doc(trained_nlp.vocab, words=words))
    assert len(long_doc) == 20000
    assert len(long_doc.ents) >= 2000


def test_empty_batch_update():
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config=crf_config())
    train_examples = examples(nlp)
    optimizer = nlp.initialize(get_examples=lambda: train_examples)
    pipe = nlp.get_pipe("crf_ner")
    assert pipe.update([], sgd=optimizer) == {"crf_ner": 0.0}
    empty = [Example.from_dict(nlp.make_doc(""), {}), Example.from_dict(nlp.make_doc(""), {})]
    assert pipe.update(empty, sgd=optimizer) == {"crf_ner": 0.0}
    # empty docs inside a batch with others are fine too
    losses = pipe.update(train_examples + empty, sgd=optimizer)
    assert losses["crf_ner"] > 0


def test_head_confidence_all_empty():
    """The head on a batch of empty docs (what architectures.py hands it when no doc has a token), probabilities on."""
    torch.manual_seed(0)
    module = BiLSTMCRFModule(hidden_width=8, depth=1, dropout=0.0)
    module.build(6, build_tags(["LOC", "MISC", "PER"], "BIO"), "BIO")
    with torch.no_grad():
        paths, ents, probs, cands, cand_probs = module.eval()(
            torch.zeros(0, 6), torch.tensor([0, 0]), confidence=(0.1, 1.0)
        )
    assert paths.shape == (2, 0) and ents.shape == (0, 4) and cands.shape == (0, 4)
    assert probs.numel() == 0 and cand_probs.numel() == 0


def test_head_update_keeps_the_parameters_memory():
    """An optimizer that returns new arrays still updates the torch weights in place (the same memory: cuDNN keeps
    an LSTM's weights in one flattened buffer); one that updates in place, as thinc's do, is left alone."""
    from conll_crf.pipeline.thinc_head import HeadShim

    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 2, bidirectional=True)
    shim = HeadShim(module)
    before = {n: (p.data_ptr(), p.detach().clone()) for n, p in module.named_parameters()}
    for p in module.parameters():
        p.grad = torch.ones_like(p)
    shim.finish_update(lambda key, w, g, lr_scale=1.0: (w - 0.5, g))  # new arrays
    for n, p in module.named_parameters():
        assert p.data_ptr() == before[n][0]
        assert torch.equal(p.detach(), before[n][1] - 0.5)
        assert not p.grad.any()

    def in_place(key, w, g, lr_scale=1.0):
        w -= 0.25
        return w, g

    for p in module.parameters():
        p.grad = torch.ones_like(p)
    shim.finish_update(in_place)
    for n, p in module.named_parameters():
        assert p.data_ptr() == before[n][0] and torch.allclose(p.detach(), before[n][1] - 0.75)


def test_the_factory_changes_no_process_state_unless_configured_to(monkeypatch):
    """retain_freed_memory (default false: it is process-wide) calls conll_crf.process only when the config
    asks; a pipeline saved before the setting existed loads with the default."""
    import conll_crf.process

    calls = []
    monkeypatch.setattr(conll_crf.process, "retain_freed_memory", lambda: calls.append(1) or True)
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner")
    assert calls == [] and nlp.config["components"]["crf_ner"]["retain_freed_memory"] is False
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config={"retain_freed_memory": True})
    assert calls == [1] and nlp.config["components"]["crf_ner"]["retain_freed_memory"] is True
    config = nlp.config.copy()
    del config["components"]["crf_ner"]["retain_freed_memory"]  # as in a pipeline saved before the setting
    assert spacy.util.load_model_from_config(config).get_pipe("crf_ner") is not None
    assert calls == [1]


def test_training_dropout_reaches_the_tok2vec():
    """nlp.update(drop=...) ([training] dropout) sets the tok2vec's dropout
    layers, as spaCy's own components do; the BiLSTM head keeps its own rate
    (the architecture's `dropout`, 0 here)."""
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config=crf_config())
    train_examples = examples(nlp)
    nlp.initialize(get_examples=lambda: train_examples)
    pipe = nlp.get_pipe("crf_ner")
    nodes = [n for n in pipe.model.get_ref("tok2vec").walk() if "dropout_rate" in n.attrs]
    assert nodes
    fix_random_seed(0)
    pipe.update(train_examples, drop=0.3)  # no optimizer: the weights stay as they are
    assert all(n.attrs["dropout_rate"] == 0.3 for n in nodes)
    without = [pipe.update(train_examples, drop=0.0)["crf_ner"] for _ in range(2)]
    assert without[0] == pytest.approx(without[1], rel=1e-6)
    assert all(n.attrs["dropout_rate"] == 0.0 for n in nodes)
    with_drop = [pipe.update(train_examples, drop=0.5)["crf_ner"] for _ in range(2)]
    assert with_drop[0] != pytest.approx(with_drop[1], rel=1e-6)  # random masks: dropout is in effect


def test_no_invalid_tag_sequence_ever(trained_nlp):
    pipe = trained_nlp.get_pipe("crf_ner")
    # random, untrained-looking inputs: many unseen words
    rng = numpy.random.default_rng(0)
    vocab = ["x" * n for n in range(1, 12)] + ["Peter", "EU", "Brussels", "the", "of", "."]
    docs = [
        Doc(trained_nlp.vocab, words=[str(w) for w in rng.choice(vocab, size=int(rng.integers(1, 40)))])
        for _ in range(200)
    ]
    for tags in pipe.predict_tags(docs):
        assert iob_spans(tags)[1] == 0, tags


def test_misaligned_gold_is_marginalised():
    """Gold entities whose boundaries fall inside a predicted token are missing
    values for those tokens, not errors."""
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config=crf_config())
    doc = nlp.make_doc("EU-wide talks in Brussels")
    gold = Doc(
        nlp.vocab, words=["EU", "-", "wide", "talks", "in", "Brussels"], spaces=[False, False, True, True, True, False]
    )
    gold.ents = [gold.char_span(0, 2, label="ORG"), gold.char_span(17, 25, label="LOC")]
    eg = Example(doc, gold)
    optimizer = nlp.initialize(lambda: [eg])
    losses = nlp.update([eg], sgd=optimizer)
    assert numpy.isfinite(losses["crf_ner"]) and losses["crf_ner"] > 0


def test_scoring(trained_nlp):
    scores = trained_nlp.evaluate(examples(trained_nlp))
    assert scores["ents_f"] == 1.0 and set(scores["ents_per_type"]) == {"PER", "ORG", "LOC", "MISC"}


@pytest.mark.parametrize("factory", ["crf_ner", "ner"])
def test_transformer_with_spelling_features(tiny_transformer, factory):
    """conll_crf.WithSpelling.v1: the listener's vectors + hashed spelling features, for crf_ner and spaCy's
    ner alike; both branches learn, and a save/load round trip keeps the predictions."""
    pytest.importorskip("spacy_transformers")
    nlp = spacy.blank("en")
    add_tiny_transformer(nlp, tiny_transformer)
    tok2vec = {
        "@architectures": "conll_crf.WithSpelling.v1",
        "tok2vec": {
            "@architectures": "spacy-transformers.TransformerListener.v1",
            "grad_factor": 1.0,
            "pooling": {"@layers": "reduce_mean.v1"},
            "upstream": "*",
        },
        "spelling": {
            "@architectures": "conll_crf.HashCharEmbed.v1",
            "width": 16,
            "rows": [500, 100, 200, 200],
            "char_width": 8,
            "char_rows": 500,
            "nM": 8,
            "nC": 4,
        },
    }
    if factory == "crf_ner":
        config = crf_config()
        config["model"]["tok2vec"] = tok2vec
    else:
        config = {
            "model": {
                "@architectures": "spacy.TransitionBasedParser.v2",
                "state_type": "ner",
                "extra_state_tokens": False,
                "hidden_width": 32,
                "maxout_pieces": 2,
                "use_upper": True,
                "tok2vec": tok2vec,
            }
        }
    pipe = nlp.add_pipe(factory, config=config)
    fix_random_seed(0)
    train_examples = examples(nlp)
    optimizer = nlp.initialize(get_examples=lambda: train_examples)
    spelling = next(node for node in pipe.model.walk() if node.name == "with_spelling").layers[1]
    before = [p.copy() for node in spelling.walk() for p in (node.get_param(n) for n in node.param_names)]
    first = None
    for _ in range(40):
        losses = {}
        nlp.update(train_examples, sgd=optimizer, losses=losses)
        first = first if first is not None else losses[factory]
    # spaCy's ner learns more slowly on 3 sentences, and its loss depends on the test order's random state
    assert losses[factory] < first * (0.2 if factory == "crf_ner" else 0.8)
    after = [node.get_param(n) for node in spelling.walk() for n in node.param_names]
    assert any(not numpy.allclose(b, a) for b, a in zip(before, after))  # the spelling branch is trained
    texts = [t for t, _ in TRAIN_DATA]
    expected = [ents(d) for d in nlp.pipe(texts)]
    nlp2 = spacy.util.load_model_from_config(nlp.config).from_bytes(nlp.to_bytes())
    assert [ents(d) for d in nlp2.pipe(texts)] == expected


def test_hash_char_embed_v2_takes_static_vectors():
    """conll_crf.HashCharEmbed.v2 with include_static_vectors: the vocab's vectors reach the embedding (one row
    under several spellings, as scripts/encoder_vectors.py writes an uncased encoder's table: "Baghdad" and
    "baghdad" share theirs), crf_ner trains on it, and a save/load round trip keeps the predictions."""
    from spacy.vectors import Vectors

    nlp = spacy.blank("en")
    words = sorted({t.lower_ for text, _ in TRAIN_DATA for t in nlp.make_doc(text)})
    rng = numpy.random.default_rng(0)
    vectors = Vectors(strings=nlp.vocab.strings, data=rng.normal(size=(len(words), 8)).astype("float32"))
    for row, word in enumerate(words):
        for form in {word, word.title()}:
            vectors.add(nlp.vocab.strings.add(form), row=row)
    nlp.vocab.vectors = vectors
    config = crf_config()
    config["model"]["tok2vec"] = {
        "@architectures": "spacy.Tok2Vec.v2",
        "embed": {
            "@architectures": "conll_crf.HashCharEmbed.v2",
            "width": 16,
            "rows": [500, 100, 200, 200],
            "char_width": 8,
            "char_rows": 500,
            "nM": 8,
            "nC": 4,
            "include_static_vectors": True,
        },
        "encode": {
            "@architectures": "spacy.MaxoutWindowEncoder.v2",
            "width": 24,
            "depth": 1,
            "window_size": 1,
            "maxout_pieces": 2,
        },
    }
    pipe = nlp.add_pipe("crf_ner", config=config)
    losses = train(nlp, n_iter=100)
    assert losses[-1] < 0.1 * losses[0]
    static = next(node for node in pipe.model.walk() if node.name == "static_vectors")
    docs = [nlp.make_doc("Ekeus in Baghdad"), nlp.make_doc("ekeus in baghdad")]
    rows = static.predict(docs)
    assert numpy.allclose(rows.dataXd[:3], rows.dataXd[3:]) and numpy.abs(rows.dataXd).sum() > 0
    before = static.predict(docs[:1]).dataXd.copy()
    nlp.vocab.vectors.data[:] *= 2.0  # the vectors reach the output
    assert not numpy.allclose(static.predict(docs[:1]).dataXd, before)
    nlp.vocab.vectors.data[:] /= 2.0
    texts = [t for t, _ in TRAIN_DATA]
    expected = [ents(d) for d in nlp.pipe(texts)]
    assert expected == gold_ents()
    nlp2 = spacy.util.load_model_from_config(nlp.config).from_bytes(nlp.to_bytes())
    assert [ents(d) for d in nlp2.pipe(texts)] == expected

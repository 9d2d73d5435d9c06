"""One `nlp` shared by threads: the same entities and probabilities as a sequential run.

A torch module's train/eval mode is state that all threads share; thinc's
PyTorchShim flips it around every prediction, so a thread finishing its
prediction switched the head's dropout on under another thread's. The head
reads dropout from its `train` argument and prediction leaves the mode alone.
"""

import threading

import pytest
import spacy
import torch
from thinc.api import fix_random_seed

from conll_crf.pipeline.head import BiLSTMCRFModule, upgrade_state_dict
from conll_crf.pipeline.thinc_head import torch_module
from tests.pipeline.test_component import TRAIN_DATA, crf_config, examples, train, transformer_pipeline

TEXTS = [t for t, _ in TRAIN_DATA] + [
    "Peter Blackburn works for the European Commission in Brussels .",
    "Z",
    "",
    " ".join(t for t, _ in TRAIN_DATA) * 40,  # one long doc
]


@pytest.fixture(scope="module")
def nlp():
    nlp = spacy.blank("en")
    config = crf_config(depth=2)
    config["model"]["dropout"] = 0.5  # dropout that, switched on, changes what is predicted
    nlp.add_pipe("crf_ner", config=config)
    train(nlp, n_iter=40)
    return nlp


def annotations(docs):
    return [
        (
            [(e.start, e.end, e.label_) for e in doc.ents],
            [(s.start, s.end, s.label_) for s in doc.spans["crf_ner"]],
            list(doc.spans["crf_ner"].attrs["scores"]),
        )
        for doc in docs
    ]


def test_prediction_neither_reads_nor_changes_the_modules_mode(nlp):
    module = torch_module(nlp.get_pipe("crf_ner").model.get_ref("output_layer"))
    expected = annotations(nlp.pipe(TEXTS))
    assert module.training  # as the last update left it: prediction did not touch it
    # what another thread's PyTorchShim.predict did on its way out, here in the middle of this prediction
    hook = module.register_forward_pre_hook(lambda mod, args: mod.train() and None)
    try:
        module.eval()
        assert annotations(nlp.pipe(TEXTS)) == expected
    finally:
        hook.remove()
    module.eval()
    assert annotations(nlp.pipe(TEXTS)) == expected
    assert not module.training
    module.train()


def in_threads(nlp, n_threads):
    """Each of n_threads threads runs TEXTS through `nlp` 3 times, all at once: every run's annotations."""
    results, errors = [None] * n_threads, []
    start = threading.Barrier(n_threads)

    def work(i):
        try:
            start.wait()
            results[i] = [annotations(nlp.pipe(TEXTS, batch_size=4)) for _ in range(3)]
        except Exception as e:  # reported below: an exception in a thread would otherwise pass silently
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    return [run for per_thread in results for run in per_thread]


@pytest.mark.parametrize("n_threads", [2, 8])
def test_threads_sharing_one_nlp_get_what_one_thread_gets(nlp, n_threads):
    expected = annotations(nlp.pipe(TEXTS, batch_size=4))
    assert all(run == expected for run in in_threads(nlp, n_threads))


def test_a_transformer_pipeline_predicts_in_eval_mode_with_the_callback(tiny_transformer, tmp_path):
    """spacy-transformers' encoder is wrapped by thinc's PyTorchShim, which flips it back to train mode (its
    dropout on) after every prediction; conll_crf.mode_stable_torch_prediction.v1 leaves it in eval mode."""
    pytest.importorskip("spacy_transformers")
    nlp = transformer_pipeline(tiny_transformer)
    fix_random_seed(0)
    egs = examples(nlp)
    optimizer = nlp.initialize(lambda: egs)
    for _ in range(3):
        nlp.update(egs, sgd=optimizer)
    nlp(TEXTS[0])
    assert nlp.get_pipe("transformer").model.transformer.training  # as thinc's PyTorchShim.predict leaves it
    nlp.to_disk(tmp_path / "trf")
    callback = {"@callbacks": "conll_crf.mode_stable_torch_prediction.v1"}
    loaded = spacy.load(tmp_path / "trf", config={"nlp": {"after_pipeline_creation": callback}})
    expected = annotations(loaded.pipe(TEXTS, batch_size=4))
    encoder = loaded.get_pipe("transformer").model.transformer
    assert not encoder.training and encoder.config.hidden_dropout_prob > 0
    # training (begin_update) puts it in train mode; the next prediction sets eval mode first, and keeps it
    encoder.train()
    assert annotations(loaded.pipe(TEXTS, batch_size=4)) == expected and not encoder.training
    assert all(run == expected for run in in_threads(loaded, 8))


def test_a_multi_layer_lstm_saved_as_one_nn_lstm_loads_into_the_layer_stack():
    """Pipelines saved before the head split its BiLSTM into single-layer LSTMs kept one
    nn.LSTM(num_layers=depth): its weights load into the stack and compute the same."""
    torch.manual_seed(0)
    module = BiLSTMCRFModule(6, 3, 0.3)
    module.build(5, ["O", "B-X", "I-X"], "BIO")
    old = torch.nn.LSTM(5, 6, num_layers=3, bidirectional=True, batch_first=True, dropout=0.3).eval()
    state = {f"lstm.{k}": v for k, v in old.state_dict().items()}
    state.update({k: v for k, v in module.state_dict().items() if not k.startswith(("lstm.", "upper."))})
    module.load_state_dict(upgrade_state_dict(state))
    x = torch.randn(1, 7, 5)
    with torch.no_grad():
        h = x[0]
        lengths = torch.tensor([7])
        ours = module.lstm(h.unsqueeze(0))[0]
        for layer in module.upper:
            ours = layer(ours)[0]
        assert torch.allclose(ours, old(x)[0], atol=1e-6)
        # and through emissions (no dropout in prediction)
        assert torch.equal(module.emissions(x[0], lengths), module.emissions(x[0], lengths))

"""The GPU path: the CRF and crf_ner on a CUDA device give what they give on the CPU.

Marked `gpu`; they run where torch sees a CUDA device (scripts/gpu_check.sh runs them there) and skip
elsewhere. CONLL_CRF_TEST_DEVICE=cpu runs the same tests with the CPU as "the device" (the check's dry
run): everything but the host-sync test, which needs CUDA, is then exercised here too.
"""

import copy
import os
from contextlib import contextmanager

import pytest
import spacy
import torch

from conll_crf.crf import LinearChainCRF
from conll_crf.crf import forward_backward as fb
from conll_crf.crf import viterbi as viterbi_module
from conll_crf.tags import build_tags
from tests.pipeline.test_component import TRAIN_DATA, crf_config, ents, gold_ents, train, transformer_pipeline

DEVICE = os.environ.get("CONLL_CRF_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE is None, reason="no CUDA device (CONLL_CRF_TEST_DEVICE=cpu runs these on the CPU)"),
]
LABELS = ["LOC", "MISC", "ORG", "PER"]
TEXTS = [text for text, _ in TRAIN_DATA] + ["", "Blackburn met Ekeus in Brussels and London ."]


@contextmanager
def device_ops():
    """thinc's ops and torch's default device on the test device for the block, the CPU after it; TF32
    off (cuDNN's LSTM would use it by default, 1e-3 relative error, above what the comparisons allow)."""
    if DEVICE == "cuda":
        tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        spacy.require_gpu(0)
        try:
            yield
        finally:
            spacy.require_cpu()
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    else:
        yield


def crf_and_inputs(scheme: str, scale: float = 1.0, seed: int = 0):
    """A float64 CRF with random parameters and a ragged batch (lengths 0 and 1 included, some impossible
    tags), on the CPU; the caller moves a copy to the device."""
    g = torch.Generator().manual_seed(seed)
    crf = LinearChainCRF.from_tags(build_tags(LABELS, scheme), scheme).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    lengths = torch.tensor([23, 0, 1, 7, 15, 23])
    T, K = int(lengths.max()), crf.num_tags
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    em = torch.randn(len(lengths), T, K, generator=g, dtype=torch.float64) * scale
    em[3, 2, 1] = float("-inf")
    em[4, 0, 0] = float("-inf")
    return crf, em, mask


def on(device, *tensors):
    return [t.to(device) for t in tensors]


@pytest.mark.parametrize("scheme", ["BIO", "BILUO"])
@pytest.mark.parametrize("scale", [1.0, 400.0])  # the scaled recursions, and the log-space ones
def test_crf_on_the_device_equals_the_cpu_in_float64(scheme, scale):
    crf, em, mask = crf_and_inputs(scheme, scale)
    dev = copy.deepcopy(crf).to(DEVICE)
    em_d, mask_d = on(DEVICE, em, mask)
    # Viterbi and n-best: identical paths
    scores, paths = crf.viterbi(em, mask)
    scores_d, paths_d = dev.viterbi(em_d, mask_d)
    assert torch.equal(paths, paths_d.cpu()) and torch.allclose(scores, scores_d.cpu(), rtol=1e-12, atol=1e-9)
    best, kpaths = crf.nbest(em, mask, k=3)
    best_d, kpaths_d = dev.nbest(em_d, mask_d, k=3)
    assert torch.equal(kpaths, kpaths_d.cpu()) and torch.allclose(best, best_d.cpu(), rtol=1e-12, atol=1e-9)
    # the NLL of the best paths and its gradients
    gold = paths.clamp(min=0)
    results = []
    for model, x, m, y in ((crf, em, mask, gold), (dev, em_d, mask_d, gold.to(DEVICE))):
        x = x.clone().requires_grad_(True)
        model.zero_grad()
        nll = model.nll(x, y, m)
        nll.sum().backward()
        grads = [x.grad] + [p.grad for p in (model.transitions, model.start_transitions, model.end_transitions)]
        results.append([nll.detach().cpu()] + [torch.nan_to_num(g).cpu() for g in grads])
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)
    # marginals, entity candidates and the path entities' probabilities
    assert torch.allclose(crf.marginals(em, mask), dev.marginals(em_d, mask_d).cpu(), rtol=1e-9, atol=1e-9)
    spans, probs = crf.entity_candidates(em, mask, threshold=0.01)
    spans_d, probs_d = dev.entity_candidates(em_d, mask_d, threshold=0.01)
    assert torch.equal(spans, spans_d.cpu()) and torch.allclose(probs, probs_d.cpu(), rtol=1e-9, atol=1e-12)
    ents = crf.path_entities(paths)
    assert torch.equal(ents, dev.path_entities(paths_d).cpu())
    p = crf.entity_probabilities(em, ents, mask)
    p_d = dev.entity_probabilities(em_d, ents.to(DEVICE), mask_d)
    assert torch.allclose(p, p_d.cpu(), rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(DEVICE != "cuda", reason="host syncs exist on CUDA only")
def test_no_host_sync_inside_the_recursions():
    """The loops over time (the scaled forward and backward, both Viterbi decoders' inner loops, the
    log-space recursions) and the NLL's backward run with torch's sync debug mode set to raise."""
    crf, em, mask = crf_and_inputs("BIO")
    crf = crf.to(DEVICE)
    em, mask = on(DEVICE, em, mask)
    trans, start, end = (p.detach() for p in crf._params(torch.float64))
    last = mask.sum(1) - 1
    lc = last.clamp(min=0)
    X = fb.extended_scores(trans, start, end)
    K, T = crf.num_tags, em.size(1)
    P = em.permute(1, 2, 0).exp().masked_fill(~mask.t().unsqueeze(1), 0.0).contiguous()
    Xs = torch.exp(X - X[torch.isfinite(X)].max())
    F_last = fb.end_weights_at(Xs[:K, K], lc, T)
    x = em.clone().requires_grad_(True)
    loss = crf.nll(x, crf.viterbi(em, mask)[1].clamp(min=0), mask).sum()  # one sync, before its loop
    emT = em.permute(1, 2, 0).contiguous()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fb.scaled_forward(P, Xs[:K, :K], Xs[K, :K], 4)
        fb.scaled_backward(P, Xs[:K, :K], F_last, 4)
        fb.log_space_forward_backward(em.masked_fill(~mask.unsqueeze(2), 0.0), trans, start, end, last)
        viterbi_module.viterbi_meet_in_middle(emT, trans, start, end, last)
        viterbi_module.viterbi_stepwise(emT, trans, start, end, last)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(x.grad[mask]).all()


def predictions(nlp, texts):
    out = []
    for doc in nlp.pipe(texts):
        group = doc.spans["crf_ner"]
        out.append(
            (
                [(e.start, e.end, e.label_) for e in doc.ents],
                [(s.start, s.end, s.label_) for s in group],
                list(group.attrs["scores"]),
            )
        )
    return out


def assert_same_predictions(a, b, tol=1e-5):
    for (ents_a, spans_a, p_a), (ents_b, spans_b, p_b) in zip(a, b):
        assert ents_a == ents_b and spans_a == spans_b
        assert all(abs(x - y) <= tol for x, y in zip(p_a, p_b))


def test_crf_ner_trains_on_the_device_and_predicts_as_on_the_cpu():
    """Training steps on the device learn the training data; the device's predictions equal the CPU's
    (entities identical, probabilities to 1e-5); saved on the device, loaded on the CPU and back."""
    with device_ops():
        nlp = spacy.blank("en")
        nlp.add_pipe("crf_ner", config=crf_config())
        train(nlp, n_iter=40)
        on_device = predictions(nlp, TEXTS)
        learned = [ents(doc) for doc in nlp.pipe(text for text, _ in TRAIN_DATA)]
        data = nlp.to_bytes()
    assert learned == gold_ents()
    cpu = spacy.blank("en")
    cpu.add_pipe("crf_ner", config=crf_config())
    cpu.from_bytes(data)
    assert_same_predictions(on_device, predictions(cpu, TEXTS))
    with device_ops():
        back = spacy.blank("en")
        back.add_pipe("crf_ner", config=crf_config())
        back.from_bytes(cpu.to_bytes())
        assert_same_predictions(on_device, predictions(back, TEXTS))


def test_a_transformer_pipeline_trains_and_predicts_on_the_device(tiny_transformer):
    pytest.importorskip("spacy_transformers")
    from spacy.training import Example

    with device_ops():
        nlp = transformer_pipeline(tiny_transformer)
        egs = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in TRAIN_DATA]
        optimizer = nlp.initialize(lambda: egs)
        losses = [nlp.update(egs, sgd=optimizer)["crf_ner"] for _ in range(5)]
        on_device = predictions(nlp, TEXTS)
        data = nlp.to_bytes()
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(0.0 <= p <= 1.0 for _, _, ps in on_device for p in ps)
    cpu = transformer_pipeline(tiny_transformer)
    cpu.from_bytes(data)
    assert_same_predictions(on_device, predictions(cpu, TEXTS), tol=1e-4)

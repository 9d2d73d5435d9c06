"""LinearChainCRF against brute-force enumeration, worked examples and pytorch-crf."""

import itertools

import pytest
import torch

import conll_crf.crf.forward_backward as forward_backward_module
import conll_crf.crf.viterbi as viterbi_module
from conll_crf.crf import LinearChainCRF, transition_constraints
from conll_crf.tags import build_tags, iob_spans

torch.set_default_dtype(torch.float32)


def make_crf(K, constrained=None, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    if constrained:
        tags, scheme = constrained
        crf = LinearChainCRF.from_tags(tags, scheme)
    else:
        crf = LinearChainCRF(K)
    with torch.no_grad():
        crf.transitions.normal_()
        crf.start_transitions.normal_()
        crf.end_transitions.normal_()
    return crf.to(dtype)


def ragged(B, T, K, lengths, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    em = torch.randn(B, T, K, generator=g, dtype=dtype)
    mask = torch.arange(T).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return em, mask


def all_paths(crf, em_b, n):
    """(path, score) for every allowed path of a length-n sequence."""
    K = crf.num_tags
    out = []
    trans = crf.transitions.masked_fill(~crf.allowed, float("-inf"))
    start = crf.start_transitions.masked_fill(~crf.allowed_start, float("-inf"))
    end = crf.end_transitions.masked_fill(~crf.allowed_end, float("-inf"))
    for path in itertools.product(range(K), repeat=n):
        s = start[path[0]] + end[path[-1]] + sum(em_b[t, path[t]] for t in range(n))
        s = s + sum(trans[path[t - 1], path[t]] for t in range(1, n))
        if torch.isfinite(s):
            out.append((path, s))
    return out


CASES = [
    pytest.param(None, 3, id="unconstrained-K3"),
    pytest.param((build_tags(["A"], "BIO"), "BIO"), 3, id="BIO-K3"),
    pytest.param((build_tags(["A", "B"], "BIO"), "BIO"), 5, id="BIO-K5"),
    pytest.param((build_tags(["A"], "BILUO"), "BILUO"), 5, id="BILUO-K5"),
]


@pytest.fixture(params=["scaled", "log-space"])
def recursion(request, monkeypatch):
    """Run a test through both forward-algorithm paths: the scaled float64 one
    (the default) and the exact log-space one used for extreme score ranges."""
    if request.param == "log-space":
        monkeypatch.setattr(forward_backward_module, "scaled_plan", lambda *args: 0)
    return request.param


@pytest.mark.parametrize("constrained,K", CASES)
def test_brute_force(constrained, K, recursion):
    T = 4
    lengths = [0, 1, T, 2, 3]
    crf = make_crf(K, constrained)
    em, mask = ragged(len(lengths), T, K, lengths)
    em.requires_grad_(True)
    gold = torch.zeros(len(lengths), T, dtype=torch.long)
    log_z = crf.log_partition(em, mask)
    v_scores, v_paths = crf.viterbi(em, mask)
    n_scores, n_paths = crf.nbest(em, mask, k=4)
    marg = crf.marginals(em, mask)
    for b, n in enumerate(lengths):
        if n == 0:
            assert log_z[b].item() == 0.0
            assert v_scores[b].item() == 0.0 and (v_paths[b] == -1).all()
            assert n_scores[b, 0].item() == 0.0 and torch.isinf(n_scores[b, 1:]).all()
            assert (marg[b] == 0).all()
            continue
        paths = all_paths(crf, em[b].detach(), n)
        scores = torch.stack([s for _, s in paths])
        assert log_z[b].item() == pytest.approx(torch.logsumexp(scores, 0).item(), abs=1e-6)
        order = sorted(range(len(paths)), key=lambda i: -scores[i].item())
        best_path, best_score = paths[order[0]]
        assert v_paths[b, :n].tolist() == list(best_path)
        assert (v_paths[b, n:] == -1).all()
        assert v_scores[b].item() == pytest.approx(best_score.item(), abs=1e-6)
        for r in range(min(4, len(paths))):
            assert n_scores[b, r].item() == pytest.approx(scores[order[r]].item(), abs=1e-6)
            got = n_paths[b, r, :n].tolist()
            assert crf.score(em[b : b + 1, :n].detach(), torch.tensor([got]), None).item() == pytest.approx(
                scores[order[r]].item(), abs=1e-6
            )
        probs = torch.softmax(scores, 0)
        expected = torch.zeros(n, K, dtype=torch.float64)
        for (path, _), p in zip(paths, probs):
            for t, tag in enumerate(path):
                expected[t, tag] += p
        assert torch.allclose(marg[b, :n], expected, atol=1e-6)
        assert (marg[b, n:] == 0).all()
        # gold = best path: score and nll
        gold[b, :n] = torch.tensor(best_path)
    nll = crf.nll(em, gold, mask)
    score = crf.score(em, gold, mask)
    for b, n in enumerate(lengths):
        if n:
            assert score[b].item() == pytest.approx(v_scores[b].item(), abs=1e-6)
    assert torch.allclose(nll, log_z - score, atol=1e-9)
    # d nll / d emissions = marginals - one-hot(gold), zero on padding
    (grad,) = torch.autograd.grad(nll.sum(), em)
    onehot = torch.nn.functional.one_hot(gold, K).to(grad.dtype) * mask.unsqueeze(2)
    assert torch.allclose(grad, marg - onehot, atol=1e-6)
    assert (grad[~mask] == 0).all()


@pytest.mark.parametrize("constrained,K", CASES)
def test_parameter_gradients_match_autograd(constrained, K, recursion):
    """The hand-written backward equals autograd through a naive log-space forward."""
    crf = make_crf(K, constrained, seed=3)
    em, mask = ragged(3, 5, K, [5, 1, 3], seed=4)
    log_z = crf.log_partition(em, mask).sum()
    grads = torch.autograd.grad(log_z, [crf.transitions, crf.start_transitions, crf.end_transitions])
    ref = 0.0
    for b, n in enumerate([5, 1, 3]):
        scores = torch.stack([s for _, s in all_paths(crf, em[b], n)])
        ref = ref + torch.logsumexp(scores, 0)
    ref_grads = torch.autograd.grad(ref, [crf.transitions, crf.start_transitions, crf.end_transitions])
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-6)


@pytest.mark.parametrize("constrained,K", CASES)
def test_nll_gradients_match_autograd(constrained, K, recursion):
    """The fused NLL (hand-written backward for log Z and the gold path) equals
    autograd through brute-force log Z minus an autograd gold score, for the
    emissions and every CRF parameter, on a ragged batch with an empty sequence."""
    crf = make_crf(K, constrained, seed=7)
    lengths = [4, 0, 1, 3]
    em, mask = ragged(len(lengths), 4, K, lengths, seed=8)
    em.requires_grad_(True)
    gold = torch.zeros(len(lengths), 4, dtype=torch.long)
    for b, n in enumerate(lengths):
        if n:
            gold[b, :n] = torch.tensor(max(all_paths(crf, em[b].detach(), n), key=lambda p: p[1].item())[0])
    params = [em, crf.transitions, crf.start_transitions, crf.end_transitions]
    weights = torch.tensor([1.0, 2.0, -0.5, 3.0], dtype=torch.float64)  # distinct per-sequence upstream gradients
    nll = crf.nll(em, gold, mask)
    grads = torch.autograd.grad((nll * weights).sum(), params)
    ref = 0.0
    for b, n in enumerate(lengths):
        if n:
            scores = torch.stack([s for _, s in all_paths(crf, em[b], n)])
            ref = ref + weights[b] * (torch.logsumexp(scores, 0) - crf.score(em[b : b + 1, :n], gold[b : b + 1, :n])[0])
    ref_grads = torch.autograd.grad(ref, params)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-6)
    assert torch.allclose(nll.detach()[1], torch.zeros((), dtype=nll.dtype))


@pytest.mark.parametrize("decoder", ["meet-in-the-middle", "stepwise"])
@pytest.mark.parametrize("constrained,K", CASES)
def test_viterbi_brute_force_every_length(constrained, K, decoder, monkeypatch):
    """Both Viterbi decoders (the meet-in-the-middle one used for small batches
    and on GPU, the stepwise one for large CPU batches) against enumeration,
    for padded lengths T = 1..7 (1..5 for K = 5) and sequence lengths 0, 1,
    T // 2, T // 2 + 1 and T: the forward and backward halves meet at T // 2."""
    if decoder == "stepwise":
        monkeypatch.setattr(viterbi_module, "VITERBI_BULK_MAX", -1)
    crf = make_crf(K, constrained, seed=11)
    for T in range(1, 8 if K <= 3 else 6):
        lengths = sorted({0, 1, T // 2, T // 2 + 1, T} - {T + 1})
        em, mask = ragged(len(lengths), T, K, lengths, seed=T)
        em[:, ::2, K - 1] = float("-inf")  # an impossible tag at every other position (as outside_only does)
        for dtype in (torch.float64, torch.float32):
            scores, paths = crf.to(dtype).viterbi(em.to(dtype), mask)
            for b, n in enumerate(lengths):
                assert (paths[b, n:] == -1).all()
                if n == 0:
                    assert scores[b].item() == 0.0
                    continue
                best_path, best_score = max(all_paths(crf.double(), em[b], n), key=lambda p: p[1].item())
                assert paths[b, :n].tolist() == list(best_path), (T, n, dtype)
                assert scores[b].item() == pytest.approx(best_score.item(), abs=1e-4)


def worked_crf(transitions, start_row=0, stop_col=1):
    t = torch.tensor(transitions, dtype=torch.float64)
    K = t.size(0)
    crf = LinearChainCRF(K).double()
    with torch.no_grad():
        crf.transitions.copy_(t)
        crf.start_transitions.copy_(t[start_row])
        crf.end_transitions.copy_(t[:, stop_col])
    return crf


def test_worked_example_log_partition():
    em = torch.tensor([[-0.4554, 0.4215, 0.12], [0.4058, -0.5081, 0.21], [0.2058, 0.5081, 0.02]], dtype=torch.float64)
    crf = worked_crf([[0.3, 0.1, 0.1], [0.8, 0.2, 0.2], [0.3, 0.7, 0.7]])
    assert crf.log_partition(em.unsqueeze(0)).item() == pytest.approx(5.0607, abs=1e-4)


def test_worked_example_viterbi():
    trans = [
        [-1e4, -9.3, 0.6, 0.1, 0.6],
        [-1e4, -1e4, -1e4, -1e4, -1e4],
        [-1e4, -2, -6, 0.9, 0.1],
        [-1e4, 0.2, -4, -5, 0.3],
        [-1e4, 0.5, 0.3, -6, 0.2],
    ]
    em = torch.tensor(
        [
            [-0.2196, -1.4047, 0.9992, 0.1948, 0.11],
            [-0.2401, 0.4565, 0.3464, -0.1856, 0.2622],
            [-0.3361, 0.1828, -0.3463, -0.2874, 0.2696],
        ],
        dtype=torch.float64,
    )
    crf = worked_crf(trans)
    score, path = crf.viterbi(em.unsqueeze(0))
    assert path[0].tolist() == [2, 3, 4]
    assert score.item() == pytest.approx(3.3832, abs=1e-4)


def test_agrees_with_pytorch_crf():
    torchcrf = pytest.importorskip("torchcrf")
    K, B, T = 7, 6, 11
    ref = torchcrf.CRF(K, batch_first=True)
    ours = LinearChainCRF(K)
    with torch.no_grad():
        ours.transitions.copy_(ref.transitions)
        ours.start_transitions.copy_(ref.start_transitions)
        ours.end_transitions.copy_(ref.end_transitions)
    lengths = [11, 1, 5, 11, 8, 2]  # torchcrf needs length >= 1
    em, mask = ragged(B, T, K, lengths, dtype=torch.float32)
    tags = torch.randint(0, K, (B, T))
    ll_ref = ref(em, tags, mask.to(torch.uint8), reduction="none")
    assert torch.allclose(-ours.nll(em, tags, mask), ll_ref, atol=1e-4)
    paths_ref = ref.decode(em, mask.to(torch.uint8))
    _, paths = ours.viterbi(em, mask)
    for b, n in enumerate(lengths):
        assert paths[b, :n].tolist() == paths_ref[b]


def test_constrained_decode_never_invalid():
    tags = build_tags(["PER", "ORG", "LOC"], "BIO")
    crf = LinearChainCRF.from_tags(tags, "BIO")
    em, mask = ragged(64, 20, len(tags), [20] * 64, seed=7, dtype=torch.float32)
    em = em * 10
    em[:, :, [t.startswith("I-") for t in tags]] += 20  # push hard towards invalid I- tags
    _, paths = crf.viterbi(em, mask)
    _, nbest = crf.nbest(em, mask, k=3)
    for path in list(paths) + [p for row in nbest for p in row]:
        names = [tags[i] for i in path.tolist()]
        assert iob_spans(names)[1] == 0, names  # no I- tag starts an entity


def test_invalid_gold_path_raises():
    tags = build_tags(["PER", "ORG"], "BIO")
    crf = LinearChainCRF.from_tags(tags, "BIO")
    em = torch.randn(1, 2, len(tags))
    bad = torch.tensor([[tags.index("O"), tags.index("I-PER")]])
    with pytest.raises(ValueError, match="constraints forbid"):
        crf.nll(em, bad)
    bad = torch.tensor([[tags.index("B-PER"), tags.index("I-ORG")]])
    with pytest.raises(ValueError, match="constraints forbid"):
        crf.nll(em, bad)
    with pytest.raises(ValueError, match="constraints forbid"):
        crf.score(em, bad)


def test_out_of_range_gold_tags_raise_but_padding_is_ignored():
    crf = LinearChainCRF(3)
    em = torch.randn(2, 3, 3)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    for tags in (torch.tensor([[0, 1, 3], [0, 0, 0]]), torch.tensor([[0, 1, 2], [-1, 0, 0]])):
        with pytest.raises(ValueError, match=r"tags must be in \[0, 3\) at unmasked positions \(sequences \[\d\]\)"):
            crf.nll(em, tags, mask)
        with pytest.raises(ValueError, match=r"tags must be in \[0, 3\)"):
            crf.score(em, tags, mask)
    padded = torch.tensor([[0, 1, 2], [2, 0, 7]])  # 7 sits on padding
    assert torch.isfinite(crf.nll(em, padded, mask)).all()


def test_biluo_constraints():
    tags = build_tags(["X"], "BILUO")
    allowed, start, end = transition_constraints(tags, "BILUO")
    i = {t: n for n, t in enumerate(tags)}
    assert allowed[i["B-X"], i["L-X"]] and allowed[i["B-X"], i["I-X"]] and not allowed[i["B-X"], i["O"]]
    assert not allowed[i["O"], i["I-X"]] and allowed[i["U-X"], i["B-X"]]
    assert start[i["B-X"]] and not start[i["L-X"]] and end[i["L-X"]] and not end[i["B-X"]]


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e3])
def test_numerics_long_and_large(scale):
    tags = build_tags(["PER", "ORG", "LOC", "MISC"], "BIO")
    crf = LinearChainCRF.from_tags(tags, "BIO")
    T = 10_000
    em = (torch.randn(2, T, len(tags)) * scale).requires_grad_(True)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[1, T // 2 :] = False
    _, gold = crf.viterbi(em.detach(), mask)
    gold = gold.clamp(min=0)
    nll = crf.nll(em, gold, mask)
    nll.sum().backward()
    assert torch.isfinite(nll).all() and (nll >= -1e-2 * scale).all()
    assert torch.isfinite(em.grad).all() and torch.isfinite(crf.transitions.grad).all()
    # float32 log Z equals float64 log Z
    ref = crf.double().log_partition(em.detach().double(), mask)
    got = crf.float().log_partition(em.detach(), mask)
    assert torch.allclose(got.double(), ref, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_emissions(dtype):
    crf = LinearChainCRF(5)
    em, mask = ragged(3, 6, 5, [6, 2, 4], dtype=torch.float32)
    tags = torch.randint(0, 5, (3, 6))
    half = em.to(dtype).requires_grad_(True)
    nll = crf.nll(half, tags, mask)
    assert nll.dtype == torch.float32
    nll.sum().backward()
    assert half.grad.dtype == dtype and torch.isfinite(half.grad.float()).all()
    assert torch.allclose(nll, crf.nll(half.detach().float(), tags, mask))


def test_partial_nll_equals_nll_when_fully_annotated_and_marginalises_missing():
    crf = make_crf(4, seed=5)
    em, mask = ragged(2, 3, 4, [3, 2], seed=6)
    tags = torch.tensor([[0, 2, 1], [3, 3, 0]])
    allowed = torch.nn.functional.one_hot(tags, 4).bool()
    assert torch.allclose(crf.partial_nll(em, allowed, mask), crf.nll(em, tags, mask))
    allowed[0, 1] = True  # unknown tag at position 1: sum over its 4 values
    scores = torch.stack([crf.score(em[:1], torch.tensor([[0, k, 1]]), mask[:1])[0] for k in range(4)])
    expected = crf.log_partition(em[:1], mask[:1])[0] - torch.logsumexp(scores, 0)
    assert crf.partial_nll(em, allowed, mask)[0].item() == pytest.approx(expected.item(), abs=1e-9)


def test_bad_shapes_raise():
    crf = LinearChainCRF(3)
    with pytest.raises(ValueError, match="emissions must be"):
        crf.log_partition(torch.randn(2, 3))
    with pytest.raises(ValueError, match="has 3"):
        crf.log_partition(torch.randn(1, 2, 4))
    with pytest.raises(ValueError, match="bool"):
        crf.log_partition(torch.randn(1, 2, 3), torch.ones(1, 2))


def test_constraints_of_one_tag_and_of_none():
    """A tag list of one tag (O) or none gives [K, K], [K] and [K] constraints, and a CRF over O alone works."""
    allowed, start, end = transition_constraints(["O"], "BIO")
    assert allowed.shape == (1, 1) and start.shape == (1,) and end.shape == (1,) and bool(allowed.all())
    allowed, start, end = transition_constraints([], "BIO")
    assert allowed.shape == (0, 0) and start.shape == (0,) and end.shape == (0,)
    crf = LinearChainCRF.from_tags(["O"], "BIO")
    em = torch.randn(2, 3, 1)
    assert torch.equal(crf.viterbi(em)[1], torch.zeros(2, 3, dtype=torch.long))
    assert torch.allclose(crf.nll(em, torch.zeros(2, 3, dtype=torch.long)), torch.zeros(2), atol=1e-6)

"""The BiLSTM-CRF head as a torch module: token vectors in, emissions, loss or decoded tags out.

`BiLSTMCRFModule` (pure torch) maps token vectors (the docs' rows one after
another [N, D], or right-padded [B, T, D]) to emissions [B, T, K] through an
optional BiLSTM over packed sequences, and owns the `LinearChainCRF`. The thinc
layer around it is in thinc_head.py.
"""

import re
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence

from ..crf import NEG_INF, LinearChainCRF
from ..tags import MODEL_SCHEMES


class BiLSTMCRFModule(nn.Module):
    """Token vectors -> dropout -> BiLSTM (depth 0: none) -> dropout -> linear
    emissions -> constrained LinearChainCRF. With ``skip`` the linear layer
    reads the BiLSTM's output concatenated with its (dropped-out) input, so the
    token vectors' own features reach the emissions directly.

    hidden_width (int): the BiLSTM's width per direction.
    depth (int): BiLSTM layers (0: none, the emissions read the token vectors).
    dropout (float): dropout on the BiLSTM's input and output (and between layers).
    skip (bool): the emission layer also reads the BiLSTM's input.

    Its sizes (input width, tags) are known only when the spaCy component
    initializes: `build` sets them.

    Nothing it computes depends on the module's train/eval mode: dropout is
    applied functionally from the ``train`` argument, and the BiLSTM's layers
    are separate single-layer LSTMs (no dropout of their own) with that
    dropout between them. A module's mode is state shared by every thread
    that uses it: one thread's flip would switch dropout on under another
    thread's prediction."""

    def __init__(self, hidden_width: int, depth: int, dropout: float, skip: bool = False) -> None:
        super().__init__()
        if depth < 0 or hidden_width < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"invalid BiLSTM settings: hidden_width={hidden_width}, depth={depth}, dropout={dropout}")
        if skip and depth == 0:
            raise ValueError("skip=True concatenates the BiLSTM's output with its input: it needs depth >= 1")
        self.cfg = {"hidden_width": hidden_width, "depth": depth, "dropout": dropout, "skip": bool(skip)}
        self.built = False

    def build(self, n_in: int, tags: Sequence[str], scheme: str) -> None:
        """Create the layers for ``n_in``-wide token vectors and ``tags`` under ``scheme``."""
        if scheme not in MODEL_SCHEMES:
            raise ValueError(f"scheme must be one of {MODEL_SCHEMES}, not {scheme!r}")
        hidden, depth = self.cfg["hidden_width"], self.cfg["depth"]
        self.cfg.update({"n_in": int(n_in), "tags": list(tags), "scheme": scheme})
        if depth > 0:
            # layer 1 keeps nn.LSTM's parameter names (lstm.weight_ih_l0, ...); layers 2.. are `upper`
            # (upgrade_state_dict maps a multi-layer nn.LSTM's saved weights onto them)
            self.lstm: Optional[nn.LSTM] = nn.LSTM(n_in, hidden, bidirectional=True, batch_first=True)
            self.upper = nn.ModuleList(
                nn.LSTM(2 * hidden, hidden, bidirectional=True, batch_first=True) for _ in range(depth - 1)
            )
            n_out = 2 * hidden + (n_in if self.cfg["skip"] else 0)
        else:
            self.lstm = None
            n_out = n_in
        self.output = nn.Linear(n_out, len(tags))
        self.crf = LinearChainCRF.from_tags(tags, scheme)
        self.built = True

    def emissions(self, x: Tensor, lengths: Tensor, train: bool = False) -> Tensor:
        """Emissions [B, T, K] (T: the longest length; 0 past each length) of
        token vectors ``x``: the docs' rows one after another [N, D], or right-
        padded [B, T', D] (T' >= T). ``lengths`` [B]: CPU int64. ``train``:
        apply dropout.

        The BiLSTM reads the packed sequence built straight from the rows (one
        gather) and the output layer maps the packed rows, so only the [N, K]
        emissions are scattered into the padded batch: nothing D- or 2H-wide
        is padded, sorted or unpacked."""
        B, K = lengths.numel(), self.output.out_features
        T = int(lengths.max()) if B else 0
        if x.dim() == 3:
            first = torch.arange(B, dtype=torch.long) * x.size(1)
            x = x.reshape(-1, x.size(2))
        else:
            first = torch.cumsum(lengths, 0) - lengths
        src, dst, batch_sizes = _packing(lengths, first, T)
        if src.numel() == 0:
            return x.new_zeros(B, T, K)
        p = self.cfg["dropout"]
        h = F.dropout(x.index_select(0, src.to(x.device)), p, train)  # [N, D], time-major packed order
        if self.lstm is not None:
            out = F.dropout(self.lstm(PackedSequence(h, batch_sizes))[0].data, p, train)
            for layer in self.upper:
                out = F.dropout(layer(PackedSequence(out, batch_sizes))[0].data, p, train)
            h = torch.cat([out, h], 1) if self.cfg["skip"] else out
        em = self.output(h)
        return em.new_zeros(B * T, K).index_copy(0, dst.to(em.device), em).view(B, T, K)

    def forward(
        self,
        x: Tensor,
        lengths: Tensor,
        allowed: Optional[Tensor] = None,
        constraints: Optional[Tensor] = None,
        confidence: Optional[Tuple[float, float]] = None,
        train: bool = False,
    ):
        """Training (``allowed`` [B, T, K] bool given): NLL [B], summing over the
        tag paths the annotation admits. Prediction: Viterbi tag indices [B, T]
        (-1 past each length), or with ``confidence`` = (candidate_threshold,
        temperature) a tuple (paths, entities [N, 4], their probabilities [N],
        candidates [M, 4], their probabilities [M]); entities are (sequence,
        start, end exclusive, label index). With G > 1 temperatures,
        (candidate_threshold, t1, ..., tG), the probabilities are [N, G] and
        [M, G], and the candidates those at or above the threshold at any of them. ``constraints`` [B, T, K] bool: the
        tags each token may take (-inf emissions elsewhere), in both modes.
        ``train``: apply dropout (the thinc layer passes its is_train)."""
        if not self.built:
            raise ValueError("BiLSTMCRFModule used before it was built (initialize the pipeline first)")
        em = self.emissions(x, lengths, train)
        mask = torch.arange(em.size(1), device=em.device).unsqueeze(0) < lengths.to(em.device).unsqueeze(1)
        if constraints is not None:
            em = em.masked_fill(~constraints, NEG_INF)
        if allowed is not None:
            single = allowed.sum(2) == 1
            if bool((single | ~mask).all()):
                return self.crf.nll(em, allowed.to(torch.long).argmax(2), mask)
            return self.crf.partial_nll(em, allowed, mask)
        paths = self.crf.viterbi(em, mask)[1]
        if confidence is None:
            return paths
        threshold, *temperatures = confidence
        em = em.detach()
        ents = self.crf.path_entities(paths)
        if len(temperatures) == 1:
            terms = self.crf.span_terms(em, mask, temperatures[0])
            probs = self.crf.entity_probabilities(em, ents, mask, terms=terms)
            cands, cand_probs = self.crf.entity_candidates(em, mask, threshold=threshold, terms=terms)
        else:  # one probability per temperature [N, G]; candidates: those at or above the threshold at any of them
            terms = [self.crf.span_terms(em, mask, t) for t in temperatures]
            found = [self.crf.entity_candidates(em, mask, threshold=threshold, terms=tm)[0] for tm in terms]
            cands = torch.unique(torch.cat(found), dim=0)  # sorted rows, as entity_candidates sorts them
            probs = torch.stack([self.crf.entity_probabilities(em, ents, mask, terms=tm) for tm in terms], 1)
            cand_probs = torch.stack([self.crf.entity_probabilities(em, cands, mask, terms=tm) for tm in terms], 1)
        return paths, ents, probs, cands, cand_probs


def upgrade_state_dict(state: dict) -> dict:
    """A state dict saved when the BiLSTM was one multi-layer nn.LSTM
    ("lstm.weight_ih_l1", ...), with its upper layers renamed to the single-
    layer LSTMs of `upper` ("upper.0.weight_ih_l0", ...); other keys as they are."""
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"lstm\.(weight|bias)_(ih|hh)_l(\d+)(_reverse)?", key)
        if m and int(m.group(3)) > 0:
            key = f"upper.{int(m.group(3)) - 1}.{m.group(1)}_{m.group(2)}_l0{m.group(4) or ''}"
        out[key] = value
    return out


def _packing(lengths: Tensor, first: Tensor, T: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Indices of a packed batch (torch's PackedSequence layout: time-major,
    docs by decreasing length, ties in batch order; empty docs left out):
    ``src`` [N] the row of each packed position in the input (doc b's token t
    is row first[b] + t), ``dst`` [N] its row in the padded [B * T] batch, and
    the batch sizes per step [T'] (T' = T, or 0 when every doc is empty).
    Host-side integer work on [T, B]."""
    order = torch.argsort(lengths, descending=True, stable=True)
    sorted_len = lengths[order]
    t = torch.arange(T, dtype=torch.long).unsqueeze(1)  # [T, 1]
    valid = t < sorted_len.unsqueeze(0)  # [T, B]
    src = (first[order].unsqueeze(0) + t)[valid]
    dst = (order.unsqueeze(0) * T + t)[valid]
    batch_sizes = valid.sum(1)
    return src, dst, batch_sizes[batch_sizes > 0]

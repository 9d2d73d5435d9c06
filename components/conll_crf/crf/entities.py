"""Entity probabilities under the linear-chain CRF, exact.

The probability, under the (constrained) CRF, that a sequence contains exactly
the entity (start, end, label): BIO: y_s = B-X, y_t = I-X for s < t <= e and
y_{e+1} != I-X (or e is the last position); BILUO: y_s = U-X when s = e, else
B-X, I-X..., L-X. From the log-space forward (alpha) and backward (beta)
variables of `forward_backward.log_forward_backward` (float64), the log score
of a span is

    alpha_s(B) + [trans(B, I) + em_{s+1}(I)] + sum_{s+1<t<=e'} [trans(I, I) + em_t(I)] + closing(e)

with prefix sums over time for the middle part, so any set of spans is one
gather. Impossible steps (-inf) are counted apart so prefix-sum differences
never see inf - inf: a span through one has probability exactly 0.

`SpanTerms` holds those per-position terms; `entity_probabilities` scores given
spans, `entity_candidates` finds every span above a threshold, and
`path_entities` reads the entities off decoded tag paths.
"""

from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .forward_backward import NEG_INF, log0, log_forward_backward

# Entity lengths the candidates' search extends at once (most entities are shorter; longer ones take more blocks).
CANDIDATE_BLOCK = 8


class EntityTags(NamedTuple):
    """Tag indices per entity label X [X] (long): B-X and I-X, and for BILUO
    also L-X and U-X (None for BIO)."""

    begin: Tensor
    inside: Tensor
    last: Optional[Tensor] = None
    unit: Optional[Tensor] = None

    @property
    def biluo(self) -> bool:
        """Whether these are BILUO tags (L-X and U-X given)."""
        return self.last is not None


class SpanTerms:
    """Per-position terms, packed [N(+1), X] over the N real positions of a
    right-padded batch (sequence after sequence; padding takes no work), from
    which the log score of any span (b, s, e, x) is a few gathers at packed
    rows off[b] + s (see `scores`)."""

    def __init__(self, em: Tensor, trans: Tensor, start: Tensor, end: Tensor, last: Tensor, ents: EntityTags) -> None:
        T = em.size(1)
        dev = em.device
        lengths = last + 1
        self.off = torch.cumsum(lengths, 0) - lengths  # [B]: each sequence's first packed row
        rows = torch.nonzero(torch.arange(T, device=dev).unsqueeze(0) < lengths.unsqueeze(1), as_tuple=True)
        self.pos_b, self.pos_s = rows  # [N] each: the sequence and position of every packed row
        alpha, beta, self.log_z = log_forward_backward(em, trans, start, end, last, rows)  # [N, K]
        self.last, self.lengths, self.biluo, self.T = last, lengths, ents.biluo, T
        b_, i_ = ents.begin.to(dev), ents.inside.to(dev)  # (tags passed by a caller may be on the host)
        self.X = len(b_)
        em = em[rows]  # [N, K]
        ends_here = (self.pos_s == last[self.pos_b]).unsqueeze(1)  # [N, 1]: a sequence's last position
        # index_select, not advanced indexing: a gather along the last dim several times faster on CPU
        self.begin = alpha.index_select(1, b_)  # [N, X]
        self.beta_begin, self.beta_inside = beta.index_select(1, b_), beta.index_select(1, i_)
        em_inside = em.index_select(1, i_)
        # the first inside step (at s + 1, from B-X), indexed by s; the later ones (from I-X) as prefix sums
        self.first = _next_row(trans[b_, i_] + em_inside, ends_here)
        self.cum, self.cum_inf = _prefix_sums(trans[i_, i_] + em_inside)  # [N + 1, X]
        if not ents.biluo:
            # leaving the entity after tag k at e: the next tag is anything but I-X, or e is the last position
            nb = _next_row(em + beta, ends_here)  # [N, K]
            n_max = nb.amax(1, keepdim=True)
            n_max = torch.where(torch.isfinite(n_max), n_max, 0.0)
            nb_exp = (nb - n_max).exp_()  # shared by both closing terms
            # both closing terms (after B-X, after I-X) in one product: [N, 2X]
            close = self._close(nb_exp, n_max, trans, end, torch.cat([b_, i_]), torch.cat([i_, i_]), ends_here)
            self.close_b, self.close_i = close[:, : self.X], close[:, self.X :]
        else:
            l_, u_ = ents.last.to(dev), ents.unit.to(dev)
            self.unit = alpha.index_select(1, u_) + beta.index_select(1, u_)
            em_beta_l = em.index_select(1, l_) + beta.index_select(1, l_)
            self.close_b = _next_row(trans[b_, l_] + em_beta_l, ends_here)  # L-X right after B-X, indexed by s
            self.close_i = trans[i_, l_] + em_beta_l  # L-X after I-X, at e

    @staticmethod
    def _close(
        nb_exp: Tensor, n_max: Tensor, trans: Tensor, end: Tensor, frm: Tensor, excl: Tensor, is_last: Tensor
    ) -> Tensor:
        """log sum_{y != excl[x]} exp(trans[frm[x], y] + nb[n, y]) [N, X], or the end
        score at a sequence's last position, from nb_exp = exp(nb - n_max) (n_max
        [N, 1] the finite maxima of nb over y): one matrix product with both
        sides shifted by their maxima (relative precision 1e-16; -inf entries are 0)."""
        rows = trans[frm].clone()  # [X, K]
        rows[torch.arange(len(frm), device=trans.device), excl] = NEG_INF
        r_max = torch.where(torch.isfinite(rows), rows, NEG_INF).amax().clamp(min=-1e300)
        inner = log0(torch.matmul(nb_exp, (rows - r_max).exp().t())).add_(n_max + r_max)
        return torch.where(is_last, end[frm].view(1, -1), inner)

    def _middle(self, b: Tensor, lo: Tensor, hi: Tensor, x: Tensor) -> Tensor:
        """Sum of the inside steps at positions lo..hi-1 of sequence b (0 when hi <= lo;
        -inf through an impossible one)."""
        n = self.lengths[b]
        hi = torch.minimum(torch.maximum(hi, lo), n) + self.off[b]
        lo = torch.minimum(lo, n) + self.off[b]
        total = self.cum[hi, x] - self.cum[lo, x]
        return total.masked_fill(self.cum_inf[hi, x] - self.cum_inf[lo, x] > 0, NEG_INF)

    def scores(self, b: Tensor, s: Tensor, e: Tensor, x: Tensor) -> Tensor:
        """Log scores (before - log Z) of the spans (b, s, e, x), e inclusive,
        s <= e <= last[b]; long tensors that broadcast together."""
        length = e - s + 1
        ps, pe = self.off[b] + s, self.off[b] + e
        head = self.begin[ps, x]
        first = self.first[ps, x]
        if not self.biluo:  # B-X at s, I-X at s+1..e, then not I-X
            long = head + first + self._middle(b, s + 2, e + 1, x) + self.close_i[pe, x]
            return torch.where(length == 1, head + self.close_b[ps, x], long)
        # BILUO: U-X; or B-X at s, I-X at s+1..e-1, L-X at e
        long = head + first + self._middle(b, s + 2, e, x) + self.close_i[pe, x]
        longer = torch.where(length == 2, head + self.close_b[ps, x], long)
        return torch.where(length == 1, self.unit[ps, x], longer)

    def prefix_scores_to(self, b: Tensor, s: Tensor, e: Tensor, x: Tensor) -> Tensor:
        """Log scores (before - log Z) of y_s = B-X followed by I-X up to e
        (broadcasting long tensors, s < e <= last[b]): a bound on the
        probability of every entity starting at s and ending after e, in both schemes."""
        ps, pe = self.off[b] + s, self.off[b] + e
        return self.begin[ps, x] + self.first[ps, x] + self._middle(b, s + 2, e + 1, x) + self.beta_inside[pe, x]

    # every start at once (no gathers): [N, X], row n at (pos_b[n], pos_s[n])

    def unit_scores(self) -> Tensor:
        """Log scores (before - log Z) of the one-token entities at every start."""
        return self.unit if self.biluo else self.begin + self.close_b

    def begin_scores(self) -> Tensor:
        """Log scores (before - log Z) of y_s = B-X at every start: a bound on
        the probability of every entity of more than one token starting at s."""
        return self.begin + self.beta_begin


def _next_row(x: Tensor, ends_here: Tensor) -> Tensor:
    """Packed x [N, X] moved one row up (x'[n] = x[n + 1], the next position of
    the same sequence), -inf at each sequence's last position."""
    out = x.new_full(x.shape, NEG_INF)
    out[:-1] = x[1:]
    return out.masked_fill_(ends_here, NEG_INF)


def _prefix_sums(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Prefix sums over the packed rows [N + 1, X] of the finite values of x
    [N, X] and of the count of -inf values (0 at row 0); a difference of two
    rows of one sequence sums the positions between them."""
    inf = torch.isinf(x)
    zero = x.new_zeros(1, x.size(1))
    fin = torch.cat([zero, torch.where(inf, 0.0, x).cumsum(0)], 0)
    cnt = torch.cat([zero, inf.to(x.dtype).cumsum(0)], 0)
    return fin, cnt


def entity_probabilities(terms: SpanTerms, spans: Tensor) -> Tensor:
    """Exact posterior probability [N] (float64) that each entity ``spans``
    [N, 4] = (sequence, start, end exclusive, label index) is in the tag
    path, under the constrained CRF whose ``terms`` are given. Spans out of
    range raise ValueError."""
    if spans.numel() == 0:
        return terms.log_z.new_zeros(0)
    b, s, e, x = spans.long().unbind(1)
    e = e - 1
    bad = (s < 0) | (e < s) | (e > terms.last[b]) | (x < 0) | (x >= terms.X)
    if bool(bad.any()):
        raise ValueError(f"spans out of range: {spans[bad][:5].tolist()}")
    return (terms.scores(b, s, e, x) - terms.log_z[b]).exp()


def entity_candidates(terms: SpanTerms, threshold: float, max_length: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Every entity whose posterior probability is at least ``threshold``:
    (spans [N, 4] long = (sequence, start, end exclusive, label index),
    probabilities [N] float64), sorted by sequence, start, end, label.

    Length 1 is one dense computation over all starts, labels and
    sequences; longer entities are extended only from the (sequence,
    start, label) whose first tags can still reach ``threshold`` (the
    probability of an entity's first tags bounds every longer one), one
    batched gather per length, until none can: so no span at or above the
    threshold is missed whatever its length, and the work past length 1
    is proportional to the live candidates. ``max_length`` caps
    the lengths (None: no cap). threshold 0 lists every possible span."""
    T, X = terms.T, terms.X
    dev = terms.log_z.device
    cap = T if max_length is None else min(T, max_length)
    if T == 0:
        return torch.zeros(0, 4, dtype=torch.long, device=dev), terms.log_z.new_zeros(0)
    last, log_z = terms.last, terms.log_z
    pos_b, pos_s = terms.pos_b, terms.pos_s  # [N]: every real position (packed rows)
    z_rows = log_z[pos_b].unsqueeze(1)  # [N, 1]
    # length 1: dense over every real start and label
    p1 = (terms.unit_scores() - z_rows).exp_()  # [N, X]
    n1, x1 = torch.nonzero((p1 >= threshold) & (p1 > 0), as_tuple=True)
    found = [torch.stack([pos_b[n1], pos_s[n1], x1], 1)]  # [n, 3] rows (b, s, x)
    found_p = [p1[n1, x1]]
    found_len = [torch.ones(len(n1), dtype=torch.long, device=dev)]
    # longer entities: only from the (b, s, x) whose first tags can still reach the threshold
    bound = (terms.begin_scores() - z_rows).exp_()
    n2, x2 = torch.nonzero((bound >= threshold) & (pos_s + 1 <= last[pos_b]).unsqueeze(1), as_tuple=True)
    alive = torch.stack([pos_b[n2], pos_s[n2], x2], 1)
    # lengths in blocks of CANDIDATE_BLOCK: the live (b, s, x) extended to every length of a block at once
    # ([N, L] gathers), a length reached while every shorter one's bound held; one host sync per block
    # (the next live set), and everything kept is filtered once at the end
    ext, ext_p, ext_len, ext_ok = [], [], [], []
    length0 = 2
    while length0 <= cap and len(alive):
        L = min(CANDIDATE_BLOCK, cap - length0 + 1)
        b, s, x = (v.unsqueeze(1) for v in alive.unbind(1))  # [N, 1]
        lengths = torch.arange(length0, length0 + L, device=dev)  # [L]
        e = s + lengths - 1  # [N, L]
        last_b = last[b]
        e_in = torch.minimum(e, last_b)  # in range for the gathers (entries past the end are not reached)
        z = log_z[b]
        p = (terms.scores(b, s, e_in, x) - z).exp()
        # continues past length l: the probability of its first l tags (a bound on every longer entity)
        # reaches the threshold and the sequence has a next position
        cont = ((terms.prefix_scores_to(b, s, e_in, x) - z).exp() >= threshold) & (e + 1 <= last_b)
        reached = torch.cat([cont.new_ones(len(alive), 1), cont[:, :-1]], 1).cumprod(1).bool() & (e <= last_b)
        ext.append(alive.repeat_interleave(L, 0))
        ext_p.append(p.reshape(-1))
        ext_len.append(lengths.repeat(len(alive)))
        ext_ok.append(reached.reshape(-1))
        length0 += L
        if length0 <= cap:
            alive = alive[reached[:, -1] & cont[:, -1]]
    if ext:
        rows, probs, lengths = torch.cat(ext), torch.cat(ext_p), torch.cat(ext_len)
        keep = torch.nonzero(torch.cat(ext_ok) & (probs >= threshold) & (probs > 0)).squeeze(1)
        found.append(rows.index_select(0, keep))
        found_p.append(probs.index_select(0, keep))
        found_len.append(lengths.index_select(0, keep))
    rows, probs, lengths = torch.cat(found), torch.cat(found_p), torch.cat(found_len)
    bb, sb, xb = rows.unbind(1)
    order = torch.argsort(((bb * T + sb) * (T + 1) + lengths) * X + xb)
    spans = torch.stack([bb, sb, sb + lengths, xb], 1)[order]
    return spans, probs[order]


def path_entities(paths: Tensor, ents: EntityTags, num_tags: int) -> Tensor:
    """The entities [N, 4] = (sequence, start, end exclusive, label index)
    of valid tag paths [B, T] (-1 past each length), sorted; decoded on
    the paths' device with no Python loop over sequences or positions."""
    K = num_tags
    B, T = paths.shape
    dev = paths.device
    label_of = torch.full((K + 1,), -1, dtype=torch.long, device=dev)
    label_of[ents.begin] = torch.arange(len(ents.begin), device=dev)
    inside = torch.zeros(K + 1, dtype=torch.bool, device=dev)
    inside[ents.inside] = True
    p = paths.long().masked_fill(paths < 0, K)  # padding -> the extra entry
    pos = torch.arange(T, device=dev).expand(B, T)
    # the first position >= t that does not continue an entity (T if none)
    stop = torch.where(inside[p], T, pos).flip(1).cummin(1).values.flip(1)
    stop_next = torch.cat([stop[:, 1:], stop.new_full((B, 1), T)], 1)
    starts = label_of[p] >= 0
    if ents.biluo:
        unit_label = torch.full((K + 1,), -1, dtype=torch.long, device=dev)
        unit_label[ents.unit] = torch.arange(len(ents.unit), device=dev)
        end = torch.where(starts, stop_next + 1, pos + 1)  # B-X ... I-X then L-X (the first non-I)
        label = torch.where(starts, label_of[p], unit_label[p])
        starts = starts | (unit_label[p] >= 0)
    else:
        end, label = stop_next, label_of[p]
    bb, ss = starts.nonzero(as_tuple=True)
    return torch.stack([bb, ss, end[bb, ss], label[bb, ss]], 1)

"""The BiLSTM-CRF head: a torch module and its thinc wrapper.

`BiLSTMCRFModule` (pure torch) maps token vectors [B, T, D] to emissions
[B, T, K] through an optional BiLSTM over packed sequences, and owns the
`LinearChainCRF`. Its sizes (input width, tags) are known only when the spaCy
component initializes, so it is built lazily; its serialized form is a
safetensors blob whose metadata holds those sizes, so deserializing rebuilds it
before the weights load, and loading never unpickles anything.

`bilstm_crf_head` wraps it with thinc's PyTorchWrapper_v3. Input:
(token vectors: List[Floats2d], targets or None, outside or None). targets:
per doc a float32 0/1 array [n_tokens, K], the tags each token's annotation
admits (made bool on the torch side); with them the output is the NLL per doc.
Without, the output is the Viterbi tag indices per doc, and outside (per doc a
float32 0/1 array [n_tokens], 1 where a token can only be O: whitespace) forces
O there.
"""
import json
import struct
from typing import Any, List, Optional, Sequence, Tuple

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from thinc.api import ArgsKwargs, Model, PyTorchWrapper_v3, torch2xp, xp2torch
from thinc.types import Floats1d, Floats2d
from thinc.util import get_torch_default_device
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .crf import LinearChainCRF, NEG_INF
from .tags import MODEL_SCHEMES

InT = Tuple[List[Floats2d], Optional[List[Any]]]


DECODERS = ("crf", "softmax")


class BiLSTMCRFModule(nn.Module):
    """Token vectors -> dropout -> BiLSTM (depth 0: none) -> dropout -> linear
    emissions -> constrained LinearChainCRF. With decoder="softmax" (an
    ablation baseline) the emissions are per-token logits instead: the loss is
    token-level cross-entropy and decoding is an independent argmax, which
    can produce invalid tag sequences."""

    def __init__(self, hidden_width: int, depth: int, dropout: float, decoder: str = "crf") -> None:
        super().__init__()
        if depth < 0 or hidden_width < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"invalid BiLSTM settings: hidden_width={hidden_width}, depth={depth}, dropout={dropout}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, not {decoder!r}")
        self.cfg = {"hidden_width": hidden_width, "depth": depth, "dropout": dropout, "decoder": decoder}
        self.built = False

    def build(self, n_in: int, tags: Sequence[str], scheme: str) -> None:
        if scheme not in MODEL_SCHEMES:
            raise ValueError(f"scheme must be one of {MODEL_SCHEMES}, not {scheme!r}")
        hidden, depth, dropout = self.cfg["hidden_width"], self.cfg["depth"], self.cfg["dropout"]
        self.cfg.update({"n_in": int(n_in), "tags": list(tags), "scheme": scheme})
        self.dropout = nn.Dropout(dropout)
        if depth > 0:
            self.lstm: Optional[nn.LSTM] = nn.LSTM(
                n_in, hidden, num_layers=depth, bidirectional=True, batch_first=True, dropout=dropout if depth > 1 else 0.0
            )
            n_out = 2 * hidden
        else:
            self.lstm = None
            n_out = n_in
        self.output = nn.Linear(n_out, len(tags))
        self.crf = LinearChainCRF.from_tags(tags, scheme)
        self.built = True

    def emissions(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x [B, T, D] right-padded, lengths [B] (CPU int64) -> emissions [B, T, K]."""
        h = self.dropout(x)
        if self.lstm is not None:
            packed = pack_padded_sequence(h, lengths.clamp(min=1), batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
            h, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
            h = self.dropout(h)
        return self.output(h)

    def forward(self, x: Tensor, lengths: Tensor, allowed: Optional[Tensor] = None, outside_only: Optional[Tensor] = None):
        """Training (``allowed`` [B, T, K] bool given): NLL [B], summing over the
        tag paths the annotation admits. Prediction: Viterbi tag indices [B, T]
        (-1 past each length); ``outside_only`` [B, T] bool forces O there."""
        if not self.built:
            raise ValueError("BiLSTMCRFModule used before it was built (initialize the pipeline first)")
        mask = torch.arange(x.size(1), device=x.device).unsqueeze(0) < lengths.to(x.device).unsqueeze(1)
        em = self.emissions(x, lengths)
        if self.cfg["decoder"] == "softmax":
            return self._softmax(em, mask, allowed, outside_only)
        if allowed is not None:
            single = allowed.sum(2) == 1
            if bool((single | ~mask).all()):
                return self.crf.nll(em, allowed.to(torch.long).argmax(2), mask)
            return self.crf.partial_nll(em, allowed, mask)
        if outside_only is not None:
            em = self._force_outside(em, outside_only)
        return self.crf.viterbi(em, mask)[1]

    def _force_outside(self, scores: Tensor, outside_only: Tensor) -> Tensor:
        """scores [B, T, K] with every tag but O impossible (NEG_INF) where
        ``outside_only`` [B, T] is set."""
        not_o = torch.ones(scores.size(2), dtype=torch.bool, device=scores.device)
        not_o[self.cfg["tags"].index("O")] = False
        return scores.masked_fill(outside_only.unsqueeze(2) & not_o, NEG_INF)

    def _softmax(self, em: Tensor, mask: Tensor, allowed: Optional[Tensor], outside_only: Optional[Tensor]):
        log_p = torch.log_softmax(em.float(), dim=2)
        if allowed is not None:  # -log P(annotation) per token, summed per doc
            nll = -torch.logsumexp(log_p.masked_fill(~allowed, NEG_INF), dim=2)
            return torch.where(mask, nll, torch.zeros_like(nll)).sum(1)
        if outside_only is not None:
            log_p = self._force_outside(log_p, outside_only)
        return log_p.argmax(2).masked_fill(~mask, -1)


# --- serialization without pickle ---------------------------------------------------------


def serialize_module(module: BiLSTMCRFModule) -> bytes:
    meta = {"cfg": json.dumps(module.cfg), "built": json.dumps(module.built)}
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    return st_save(state, metadata=meta)


def _safetensors_metadata(data: bytes) -> dict:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]).get("__metadata__", {})


def deserialize_module(module: BiLSTMCRFModule, data: bytes, device) -> BiLSTMCRFModule:
    meta = _safetensors_metadata(data)
    cfg = json.loads(meta["cfg"])
    fresh = BiLSTMCRFModule(cfg["hidden_width"], cfg["depth"], cfg["dropout"], cfg.get("decoder", "crf"))
    if json.loads(meta["built"]):
        fresh.build(cfg["n_in"], cfg["tags"], cfg["scheme"])
        fresh.load_state_dict(st_load(data))
    return fresh.to(device)


# --- thinc wrapper --------------------------------------------------------------------------


def _convert_inputs(model: Model, inputs, is_train: bool):
    Xs, targets, outside = inputs
    ops = model.ops
    lengths = [len(x) for x in Xs]
    x = xp2torch(_pad(ops, Xs), requires_grad=is_train)  # [B, T, D]
    lengths_t = torch.tensor(lengths, dtype=torch.long)
    kwargs = {}
    if targets is not None:
        kwargs["allowed"] = xp2torch(_pad(ops, targets)).bool()
    if outside is not None:
        kwargs["outside_only"] = xp2torch(_pad(ops, [o.reshape(-1, 1) for o in outside])).squeeze(2).bool()

    def backprop(d_inputs: ArgsKwargs) -> List[Floats2d]:
        return ops.unpad(torch2xp(d_inputs.args[0]), lengths)

    return ArgsKwargs(args=(x, lengths_t), kwargs=kwargs), backprop


def _pad(ops, seqs):
    """Right-pad 2d arrays [n_i, D] into [B, max n_i, D] (zeros). Empty arrays
    may have any width (a transformer listener gives (0, 0) for an empty doc)."""
    width = max(x.shape[1] for x in seqs)
    out = ops.alloc3f(len(seqs), max(len(x) for x in seqs), width)
    for i, x in enumerate(seqs):
        if len(x):
            out[i, : len(x)] = x
    return out


def _convert_outputs(model: Model, inputs_outputs, is_train: bool):
    (Xs, targets, _), Y = inputs_outputs
    if targets is None:
        paths = torch2xp(Y)
        return [paths[i, : len(x)] for i, x in enumerate(Xs)], lambda dY: None

    def backprop(d_nll: Floats1d) -> ArgsKwargs:
        grad = xp2torch(d_nll).to(Y.device, Y.dtype)
        return ArgsKwargs(args=(Y,), kwargs={"grad_tensors": (grad,)})

    return torch2xp(Y.detach()), backprop


def bilstm_crf_head(hidden_width: int, depth: int, dropout: float, mixed_precision: bool = False, decoder: str = "crf") -> Model:
    """The thinc layer around BiLSTMCRFModule; `build_head` sizes it."""
    module = BiLSTMCRFModule(hidden_width, depth, dropout, decoder)
    wrapper = PyTorchWrapper_v3(
        module,
        convert_inputs=_convert_inputs,
        convert_outputs=_convert_outputs,
        mixed_precision=mixed_precision,
        serialize_model=serialize_module,
        deserialize_model=deserialize_module,
    )
    return Model("bilstm_crf_head", _head_forward, layers=[wrapper], dims={"nI": None, "nO": None})


def _head_forward(model: Model, inputs, is_train: bool):
    Xs, targets, outside = inputs
    if not Xs:
        return ([] if targets is None else model.ops.alloc1f(0)), lambda d: []
    if max(len(x) for x in Xs) == 0:  # only empty docs: nothing for torch to do
        if targets is None:
            return [model.ops.alloc1i(0) for _ in Xs], lambda d: []
        return model.ops.alloc1f(len(Xs)), lambda d: [model.ops.alloc2f(0, x.shape[1]) for x in Xs]
    return model.layers[0](inputs, is_train)


def torch_module(head: Model) -> BiLSTMCRFModule:
    return head.layers[0].shims[0]._model


def build_head(head: Model, n_in: int, tags: Sequence[str], scheme: str) -> None:
    """Size the head for `n_in`-wide token vectors and `tags`, on thinc's device."""
    shim = head.layers[0].shims[0]
    module = BiLSTMCRFModule(**{k: shim._model.cfg[k] for k in ("hidden_width", "depth", "dropout", "decoder")})
    module.build(n_in, tags, scheme)
    shim._model = module.to(get_torch_default_device())
    head.set_dim("nI", n_in, force=True)
    head.set_dim("nO", len(tags), force=True)


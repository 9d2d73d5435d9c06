"""Torch modules of other components (a spacy-transformers encoder) predicting without mode flips.

thinc's PyTorchShim.predict puts its torch module in eval mode, runs it, and
puts it back in train mode. The mode is an attribute of the module, shared by
every thread that calls the pipeline, so when two threads predict at once, the
one that finishes first switches dropout back on under the other: a
transformer's output, and the entities read from it, then depend on timing.
crf_ner's own head reads dropout from an argument and never flips its mode
(head.py, thinc_head.HeadShim); this callback gives the other torch layers of
a pipeline the same behaviour:

    [nlp.after_pipeline_creation]
    @callbacks = "conll_crf.mode_stable_torch_prediction.v1"

Each PyTorchShim of the pipeline's components (this pipeline's objects only,
nothing process-wide) then predicts in eval mode and leaves it there: the
first prediction switches the module to eval mode if it is in train mode, and
no prediction ever switches it back; training's begin_update puts it in train
mode as before. What stays unsafe: training (nlp.update) in one thread while
another predicts with the same pipeline, which no spaCy pipeline supports.
"""

import types
from typing import Any, Callable

import torch
from spacy.language import Language
from spacy.util import registry
from thinc.api import ArgsKwargs, Model, PyTorchShim

from .thinc_head import HeadShim


def _predict_in_eval_mode(shim: PyTorchShim, inputs: ArgsKwargs) -> Any:
    if shim._model.training:  # idempotent under threads: every thread that sees train mode sets eval mode
        shim._model.eval()
    with torch.no_grad():
        with torch.autocast(device_type="cuda", enabled=shim._mixed_precision):
            return shim._model(*inputs.args, **inputs.kwargs)


def mode_stable_prediction(nlp: Language) -> int:
    """Make every PyTorchShim in `nlp`'s components predict without flipping
    its module's mode (see the module's doc). Returns how many shims changed."""
    changed = 0
    seen = set()
    for _, pipe in nlp.components:
        model = getattr(pipe, "model", None)
        if not isinstance(model, Model):
            continue
        for node in model.walk():
            for shim in node.shims:
                if id(shim) in seen or not isinstance(shim, PyTorchShim) or isinstance(shim, HeadShim):
                    continue
                seen.add(id(shim))
                shim.predict = types.MethodType(_predict_in_eval_mode, shim)
                changed += 1
    return changed


@registry.callbacks("conll_crf.mode_stable_torch_prediction.v1")
def make_mode_stable_torch_prediction() -> Callable[[Language], Language]:
    """[nlp.after_pipeline_creation] callback: `mode_stable_prediction` on the new pipeline."""

    def apply(nlp: Language) -> Language:
        mode_stable_prediction(nlp)
        return nlp

    return apply

"""Hidden states captured by forward hooks, and a forward pass stopped after a layer.

HF models hand back every hidden state only after running every layer. A head that
reads the middle of the network needs none of the layers above its deepest row, so
``capturing`` registers hooks that record the layers' outputs as they run and raise
``Stop`` after the last one needed: the layers above never run. Both the depth-limited
forward of ``core.model.backbone.Backbone.hidden_states`` and the shared-prefix path of
``core.model.prefix`` go through here.

Hidden-state index r follows HF's ``output_hidden_states``: 0 is the first layer's
input (the embeddings' output), r >= 1 the output of layer r - 1. The hooks read raw
layer outputs, so they equal HF's rows except the last row of a model that norms its
final state (Llama and other decoders): callers that need that row run every layer.

The hooks act only for the thread whose job is set (a thread-local), so another thread
running the same shared model meanwhile (a retrain while SHAP runs) is neither captured
nor stopped. Decoders keep their layers at ``model.layers``, encoders (BERT, MPNet) at
``model.encoder.layer``: ``layer_stack`` finds either.
"""

from __future__ import annotations

import functools
import threading
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["Job", "Stop", "capturing", "layer_stack"]

_local = threading.local()


class Stop(Exception):
    """Raised by a hook after the deepest needed layer, to skip the layers above it."""


@dataclass
class Job:
    """What one forward pass of one thread captures.

    wanted: hidden-state indices to record; stop_after: raise ``Stop`` once this many
    layers have run (None runs them all); captured: {index: tensor (batch, n_tokens,
    hidden)}, filled as the layers run.
    """

    wanted: set
    stop_after: int | None
    captured: dict


def layer_stack(model):
    """The model's stack of transformer layers (``model.layers`` of a decoder,
    ``model.encoder.layer`` of an encoder), or None when it has neither."""
    layers = getattr(model, "layers", None)
    if layers is None:
        layers = getattr(getattr(model, "encoder", None), "layer", None)
    return layers


@contextmanager
def capturing(model, job: Job):
    """Run the body's forward pass of ``model`` under ``job`` in this thread.

    The hooks are registered on entry and removed on exit, so nothing stays on the
    model between passes; a ``Stop`` raised by them ends the body quietly, with
    ``job.captured`` holding what ran.
    """
    hooks = _register(layer_stack(model), job)
    _local.job = job
    try:
        yield job
    except Stop:
        pass
    finally:
        _local.job = None
        for hook in hooks:
            hook.remove()


def _register(layers, job: Job) -> list:
    """Only the layers whose output the job reads or stops after get a hook (registering
    and calling one on every layer was a measurable share of a small pass)."""
    hooks = ([layers[0].register_forward_pre_hook(_before_first_layer, with_kwargs=True)]
             if 0 in job.wanted else [])
    hooks += [layer.register_forward_hook(functools.partial(_after_layer, i + 1))
              for i, layer in enumerate(layers) if i + 1 in job.wanted or i + 1 == job.stop_after]
    return hooks


def _before_first_layer(module, args, kwargs):
    job = getattr(_local, "job", None)
    if job is not None and 0 in job.wanted:
        job.captured[0] = args[0] if args else kwargs["hidden_states"]


def _after_layer(index, module, args, output):
    job = getattr(_local, "job", None)
    if job is None:
        return
    if index in job.wanted:
        job.captured[index] = output[0] if isinstance(output, tuple) else output
    if index == job.stop_after:
        raise Stop

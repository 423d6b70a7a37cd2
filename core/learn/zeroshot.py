"""Zero-shot baseline: ask the backbone LLM itself, with no training at all.

Each text is placed in an instruction that lists the class names, and every class
name (preceded by a space) is scored by the log-probability the LLM gives it as the
continuation. The prediction is the class with the highest score.

The backbone is loaded without its LM head (``AutoModel``), so next-token logits are
rebuilt as ``last_hidden_state @ E.T`` where E is the input embedding matrix. That is
exactly the LM head for models that tie their output layer to their input embeddings
(SmolLM2, Gemma-3, Qwen2.5 up to 3B); for those families ``last_hidden_state``
already has the final norm applied. Gemma-2-style final logit softcapping is applied
when the config sets it. Encoders (MiniLM) and untied decoders are refused.

A multi-token class name scores the SUM of its tokens' log-probabilities, i.e. the
log-probability of the whole name, the chance the model would answer with it
(``reduce="mean"`` averages instead, which favours long names less strictly).
With ``calibrate=True`` the scores of a content-free text ("N/A") are subtracted from
every text's scores (contextual calibration, Zhao et al. 2021): a small LLM often
prefers one class name whatever the text, and this removes that prior without labels.
Shortcut: the plain-text prompt is used as-is, without an instruct model's chat
template, so the baseline is the same for base and instruct backbones.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from core.errors import BackboneError, InputError
from core.model.forward import run_batches
from core.model.tokens import DEFAULT_MAX_LENGTH, encode

__all__ = [
    "CONTENT_FREE",
    "DEFAULT_ZERO_SHOT_PROMPT",
    "ZeroShotUnsupported",
    "class_log_probs",
    "format_classes",
    "zero_shot_predict",
]

# {text} is the sentence, {classes} the class names ("a, b or c")
DEFAULT_ZERO_SHOT_PROMPT = "Text: {text}\nWhich category fits best: {classes}?\nAnswer:"
CONTENT_FREE = "N/A"
_REDUCES = ("sum", "mean")


class ZeroShotUnsupported(BackboneError):
    """The backbone cannot give next-token probabilities without its LM head."""


def format_classes(classes: Sequence[str]) -> str:
    """Class names as an English list.

    >>> format_classes(["World", "Sports", "Business"])
    'World, Sports or Business'
    """
    classes = list(classes)
    return classes[0] if len(classes) == 1 else ", ".join(classes[:-1]) + " or " + classes[-1]


def _output_layer(backbone):
    """(embedding matrix of shape (vocab, hidden), softcap or None) standing in for the LM head."""
    config = backbone.model.config
    name = backbone.name
    if getattr(config, "is_encoder_decoder", False):
        raise ZeroShotUnsupported(
            f"The backbone '{name}' is an encoder-decoder model; the zero-shot baseline needs a "
            "decoder-only LLM such as smollm2-135m, gemma3-270m or qwen2.5-0.5b.")
    if not _is_causal(backbone):
        raise ZeroShotUnsupported(
            f"The backbone '{name}' is a sentence encoder (its attention looks both ways), so it "
            "has no next-word probabilities to ask; choose a decoder LLM such as smollm2-135m "
            "for the zero-shot baseline.")
    if not getattr(config, "tie_word_embeddings", False):
        raise ZeroShotUnsupported(
            f"The backbone '{name}' does not tie its output layer to its input embeddings, and "
            "tenshot loads it without that layer, so it cannot score class names; the zero-shot "
            "baseline works with tied models such as smollm2-135m, gemma3-270m and qwen2.5-*.")
    return backbone.model.get_input_embeddings().weight, getattr(config, "final_logit_softcapping", None)


def _is_causal(backbone) -> bool:
    """Whether changing a later token leaves an earlier token's state alone (causal attention)."""
    import torch

    vocab = int(backbone.model.config.vocab_size)
    ids = torch.tensor([[0, 1, 2], [0, 1, 3 % vocab]])
    h = backbone.last_hidden_state(ids, torch.ones_like(ids))
    return bool(torch.allclose(h[0, :2].float(), h[1, :2].float(), atol=1e-4, rtol=1e-3))


def _sequences(backbone, texts, classes, prompt, max_length) -> dict[tuple, list]:
    """Forward passes needed, deduplicated.

    Scoring class tokens c_1..c_m after prompt p needs one pass over p + c_1..c_{m-1};
    single-token classes of one text share the pass over p alone. Returns
    {token ids: [(text index, class index, first position, class token ids), ...]}.
    """
    template = prompt.replace("{classes}", format_classes(classes))
    encoded = encode(backbone.tokenizer, texts, prompt=template, max_length=max_length)
    conts = [backbone.tokenizer(" " + c, add_special_tokens=False)["input_ids"] for c in classes]
    for c, ids in zip(classes, conts):
        if not ids:
            raise InputError(f"The class name {c!r} has no tokens; give every class a visible name.")
    seqs: dict[tuple, list] = {}
    for i, enc in enumerate(encoded):
        p = list(enc.input_ids)
        for j, cont in enumerate(conts):
            seqs.setdefault(tuple(p + cont[:-1]), []).append((i, j, len(p) - 1, cont))
    return seqs


def class_log_probs(backbone, texts: Sequence[str], classes: Sequence[str], *,
                    prompt: str = DEFAULT_ZERO_SHOT_PROMPT, reduce: str = "sum",
                    calibrate: bool = False, batch_size: int = 16,
                    max_length: int = DEFAULT_MAX_LENGTH,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Log-probability of each class name after each text's instruction.

    prompt: template holding ``{text}`` once and optionally ``{classes}``.
    Returns float64 array of shape (n_texts, n_classes); each entry is the sum (or mean)
    over the class name's tokens of log p(token | prompt, earlier class tokens), minus
    the same for the content-free text when ``calibrate``.
    Forward passes run in length-sorted batches; progress(done, total) counts passes.
    """
    import torch

    if reduce not in _REDUCES:
        raise InputError(f"Unknown reduce '{reduce}'; choose one of {', '.join(_REDUCES)}.")
    if len(classes) < 2:
        raise InputError(f"Zero-shot needs at least 2 classes; got {list(classes)}.")
    weight, softcap = _output_layer(backbone)
    texts = list(texts) + ([CONTENT_FREE] if calibrate else [])
    seqs = _sequences(backbone, texts, list(classes), prompt, max_length)
    keys = list(seqs)
    total = np.zeros((len(texts), len(classes)))
    done = 0
    for idx, _, (h,) in run_batches(backbone, keys, batch_size=batch_size, all_layers=False):
        rows, pos, targets, where = [], [], [], []
        for b, i in enumerate(idx):
            for text_i, class_j, start, cont in seqs[keys[i]]:
                rows += [b] * len(cont)
                pos += range(start, start + len(cont))
                targets += cont
                where += [(text_i, class_j)] * len(cont)
        with torch.inference_mode():
            # only the scored positions meet the (vocab x hidden) matrix: Gemma's vocab is 262k
            logits = h[rows, pos].float() @ weight.float().T  # (n positions, vocab)
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            logp = torch.log_softmax(logits, -1)[torch.arange(len(targets)), torch.tensor(targets)]
        np.add.at(total, tuple(np.array(where).T), logp.double().cpu().numpy())
        done += len(idx)
        if progress:
            progress(done, len(keys))
    if reduce == "mean":
        lengths = [len(backbone.tokenizer(" " + c, add_special_tokens=False)["input_ids"]) for c in classes]
        total /= np.array(lengths, dtype=float)
    return total[:-1] - total[-1] if calibrate else total


def zero_shot_predict(backbone, texts: Sequence[str], classes: Sequence[str], **kwargs) -> list[str]:
    """The class with the highest score (``class_log_probs``) for each text."""
    scores = class_log_probs(backbone, texts, classes, **kwargs)
    return [classes[j] for j in scores.argmax(1)]

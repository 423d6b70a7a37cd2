"""A loaded backbone and the one place the network runs.

``Backbone.hidden_states`` (all layers, or up to a depth) and ``Backbone.last_hidden_state`` run a
padded batch and own the out-of-memory rule: a batch that runs out of memory is
split in halves and run again, and a single text that does raises BackboneError
with a plain message. ``Backbone.forward`` runs prepared inputs (the prefix path)
under the same rule without splitting. Batching and padding are in
``core.model.forward``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.errors import BackboneError
from core.model.capture import Job, capturing, layer_stack

__all__ = ["Backbone", "is_out_of_memory"]


@dataclass
class Backbone:
    """A loaded model plus its tokenizer.

    ``fingerprint`` identifies the exact weights and loader, so cached features from
    different weights never mix. ``hidden_states``, ``last_hidden_state`` and ``forward``
    are the only methods that run the network; batching is in ``core.model.forward``,
    pooling and caching in ``core.model.embed``, the shared-prefix path in
    ``core.model.prefix``.
    """

    name: str
    model: Any
    tokenizer: Any
    fingerprint: str
    device: str = "cpu"
    info: dict = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        """Number of hidden-state arrays: transformer layers + 1 (index 0 = embeddings)."""
        return int(self.model.config.num_hidden_layers) + 1

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def hidden_states(self, input_ids, attention_mask, depth: int | None = None) -> tuple:
        """Run the network on one padded batch.

        input_ids, attention_mask: int tensors of shape (batch, n_tokens).
        Returns a tuple of ``n_layers`` float tensors, each (batch, n_tokens, hidden);
        element 0 is the embedding layer's output. A batch that runs out of memory is
        split in halves and run again; a single text that does raises BackboneError.
        depth: the deepest hidden-state index needed; only layers 0..depth - 1 run and
        the tuple holds the ``depth + 1`` tensors 0..depth, equal to the full pass's
        (``core.model.capture``). The last index needs every layer (a decoder norms it).
        """
        last = self.n_layers - 1
        if depth is not None and not 0 <= depth <= last:
            raise ValueError(f"depth must lie in 0..{last}; got {depth}")
        stack = layer_stack(self.model)
        if depth is None or depth == last or stack is None or len(stack) != last:
            states = self._run_split(input_ids, attention_mask, all_layers=True)
            return states if depth is None else states[:depth + 1]
        return self._run_split(input_ids, attention_mask, all_layers=True, depth=depth)

    def last_hidden_state(self, input_ids, attention_mask):
        """The final (normed) hidden state of one padded batch: (batch, n_tokens, hidden),
        under the same out-of-memory rule as ``hidden_states``."""
        return self._run_split(input_ids, attention_mask, all_layers=False)[0]

    def _run_split(self, input_ids, attention_mask, *, all_layers: bool, depth: int | None = None) -> tuple:
        import torch

        try:
            with torch.inference_mode():
                inputs = {"input_ids": input_ids.to(self.device),
                          "attention_mask": attention_mask.to(self.device), "use_cache": False}
                if depth is not None:
                    return self._run_to(depth, inputs)
                out = self.model(**inputs, output_hidden_states=all_layers)
            return out.hidden_states if all_layers else (out.last_hidden_state,)
        except (RuntimeError, MemoryError) as err:
            if not is_out_of_memory(err):
                raise
        if self.device.startswith("cuda"):  # hand the failed batch's memory back to the GPU
            torch.cuda.empty_cache()
        n, width = input_ids.shape
        if n == 1:
            raise BackboneError(
                f"The language model ran out of memory on one sentence of {width} tokens "
                f"({self.device}). Close other programs to free memory, or choose a smaller "
                "backbone on the Model page (or shorten the longest sentences), then try "
                "again. Your sentences and labels are saved."
            )
        half = n // 2
        first = self._run_split(input_ids[:half], attention_mask[:half], all_layers=all_layers, depth=depth)
        second = self._run_split(input_ids[half:], attention_mask[half:], all_layers=all_layers, depth=depth)
        return tuple(torch.cat([a.to(b.device), b]) for a, b in zip(first, second))

    def _run_to(self, depth: int, inputs: dict) -> tuple:
        """Hidden states 0..depth (depth below the last index), the layers above not run."""
        job = Job(set(range(depth + 1)), max(depth, 1), {})
        with capturing(self.model, job):
            self.model(**inputs)
        return tuple(job.captured[r] for r in range(depth + 1))

    def forward(self, **inputs):
        """Run the network on prepared inputs (tensors are moved to the device), without
        gradients; running out of memory raises BackboneError with a plain message."""
        import torch

        inputs = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        try:
            with torch.inference_mode():
                return self.model(**inputs)
        except (RuntimeError, MemoryError) as err:
            if not is_out_of_memory(err):
                raise
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            raise BackboneError(
                f"The language model ran out of memory ({self.device}). Close other programs to "
                "free memory, or choose a smaller backbone on the Model page, then try again. "
                "Your sentences and labels are saved.") from None


def is_out_of_memory(err: BaseException) -> bool:
    """torch.OutOfMemoryError, a CUDA/CPU allocator failure or a MemoryError."""
    text = str(err).lower()
    return (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or "out of memory" in text or "can't allocate memory" in text)

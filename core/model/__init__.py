"""Text -> tokens -> hidden states -> pooled features: backbones, their loading, the one
forward loop, embedding with feature caches, and the shared-prefix fast path."""

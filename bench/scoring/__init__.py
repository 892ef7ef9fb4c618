"""Exact, memory-bounded scorers over embeddings: image-text ranks (:mod:`.itr`), strips (:mod:`.strips`) and
uni-modal metrics (:mod:`.unimodal`), sharing :mod:`.common`."""

__all__ = ["TIE_RULE"]

# Here, not in .common, so the CLI can print it without importing torch.
TIE_RULE = (
    "pessimistic: a query's 0-based rank is the number of non-positive, non-excluded gallery items whose score "
    "(float32 dot product) is >= the query's best positive score; ties never help a query"
)

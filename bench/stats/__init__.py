"""Uncertainty from stored per-query results: image-clustered bootstrap intervals (:mod:`.bootstrap`) and paired
comparisons (:mod:`.paired`). Nothing here scores embeddings again."""

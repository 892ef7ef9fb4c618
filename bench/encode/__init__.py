"""Stage 1 and 2 of encoding: batched image and caption encoding (features), and the stage-1 feature cache (cache)."""

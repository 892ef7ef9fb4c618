"""Fine-tuning: the training loop with checkpoints (:mod:`.fit`) and data-parallel ranks (:mod:`.distributed`)."""

"""Evaluating an adapter on a split: encode, score, re-rank (:mod:`.itr`, :mod:`.rerank`, :mod:`.unimodal`)."""

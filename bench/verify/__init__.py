"""Finished records against published numbers (``bench verify``): the rows of ``published.json`` and the rules that
match a record to a row (:mod:`.check`)."""

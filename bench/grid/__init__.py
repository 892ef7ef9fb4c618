"""Grids: one cell (:mod:`.cell`) to one record (:mod:`.execute`, :mod:`.records`), run locally (:mod:`.local`) or
through submitit (:mod:`.slurm`)."""

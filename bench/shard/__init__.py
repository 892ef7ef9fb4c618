"""Sharded evaluation of one large split over many tasks (a SLURM job array, or a loop here).

The data path, one folder per cell under ``<work_dir>/shards/``::

    plan.json                the cut: image and caption row slices (encode), score parts; the inputs it was made for
    images-00003.npy         encode task 3: its contiguous slice of image embeddings (float32, as the model gave them)
    captions-00003.npy       ... and of caption embeddings
    encode-00003.json        written last: task 3 is done (rows, shapes)
    score-00002.npz          score task 2: its part of every scan (:mod:`bench.scoring.itr_scan`, ``.sibling_scan``)
    score-00002.json         written last: task 2 is done

then one merge writes the cell's ordinary record and per-query file (:mod:`.merge`), equal to the one-process
record's. Every file is written atomically and a task whose marker is there is skipped, so a re-run, a preempted
task or a killed submitter resumes where it stopped; a plan made for other inputs or another config is removed, never
reused.
"""

__all__: list[str] = []

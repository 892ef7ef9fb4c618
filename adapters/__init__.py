"""Model families behind one interface (:mod:`bench.adapters.protocol`), one module per family.

This folder is installed as ``bench.adapters``. The families register themselves when imported; the registry
(:mod:`bench.adapters.registry`) imports each only when its name is first asked for, so this package stays light.
"""

"""edge_tune: find the compression that makes a CNN fastest on an edge device.

Stages, one module each: ``data`` -> ``models`` -> ``baseline`` -> ``recipe`` (params to a
compression schedule) -> ``prune`` / ``train`` -> ``export`` -> ``quantize`` -> ``verify`` ->
``bench``; ``trial`` chains them. Importing the package imports nothing heavy: ``bench`` and
``verify`` run on edge nodes without torch.
"""

__version__ = "0.1.0"

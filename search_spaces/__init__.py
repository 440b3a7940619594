"""Packaged search spaces (``<name>.yaml``), installed as ``edge_tune.search_spaces``."""

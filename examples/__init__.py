"""Example configs and Distiller recipes, installed as ``edge_tune.examples``."""

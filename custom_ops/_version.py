"""kpx version (one place; read by pyproject and written into exported models)."""

__version__ = "0.1.0"

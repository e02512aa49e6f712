"""Offline sources of the real data sets (``python -m modalities.data fetch``): see sources.py."""

from modalities.data.sources import SOURCES, MissingDataError, data_dir, fetch, require

__all__ = ["SOURCES", "MissingDataError", "data_dir", "fetch", "require"]

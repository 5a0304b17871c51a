"""faceveil: make image datasets privacy-safe — find every face, hide it, keep the record."""

__version__ = "0.1.0"

from faceveil.anonymizer import Anonymizer, anonymize
from faceveil.types import Face, HiddenFace, Region, Settings

__all__ = ["Anonymizer", "Face", "HiddenFace", "Region", "Settings", "__version__", "anonymize"]

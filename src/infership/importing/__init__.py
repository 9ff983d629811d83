"""Importing a trained model into a repository, checked against the original (docs/import.md).

``save_model`` takes a live model object, ``import_path`` a model saved on disk; both write the
next version folder of ``repository/name`` only after the served answers matched the
original's. Frameworks are imported lazily, by the source that needs them.
"""

from infership.importing.api import ImportReport, import_path, save_model, verify_parity
from infership.importing.parity import Tolerance

__all__ = ["ImportReport", "Tolerance", "import_path", "save_model", "verify_parity"]

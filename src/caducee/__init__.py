"""caducee: secure S/MIME e-mail for health professionals."""

import logging

__version__ = "0.1.0"

# A library says nothing unless its host configures logging (no last-resort output on stderr).
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]

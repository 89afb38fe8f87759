"""caducee: secure S/MIME e-mail for health professionals."""

__version__ = "0.1.0"

__all__ = ["__version__"]

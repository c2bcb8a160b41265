"""rotator: boring, safe JWT signing-key rotation."""

__version__ = "0.1.0"
__all__ = ["__version__"]

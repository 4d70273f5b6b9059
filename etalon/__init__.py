"""etalon: how an LLM inference service feels to its users, and how much load it can carry."""

__all__ = ["__version__"]
__version__ = "0.1.0"

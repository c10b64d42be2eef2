"""The error of model specs (shared by the registry and the Hugging Face builder)."""

__all__ = ["ModelSpecError"]


class ModelSpecError(ValueError):
    """A model spec or its kwargs that cannot be turned into an ``nn.Module``."""

"""Models: containers that run layers through preallocated workspaces."""
from .functional import Model
from .sequential import Sequential

__all__ = ["Model", "Sequential"]

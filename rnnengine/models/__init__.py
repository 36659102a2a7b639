"""Models: containers that run layers through preallocated workspaces."""
from .sequential import Sequential

__all__ = ["Sequential"]

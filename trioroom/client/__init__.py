"""The client package (being split up; see client.py)."""

from .client import *  # noqa: F403
from .client import __all__, _reraise, _single_error  # noqa: F401

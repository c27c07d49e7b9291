"""snakepit_bridge: the Python worker side of snakepit-rs.

``from snakepit_bridge import BaseAdapter, tool, telemetry``
"""

from . import telemetry
from .base_adapter import BaseAdapter, tool

__all__ = ["BaseAdapter", "tool", "telemetry", "PROTOCOL_VERSION"]
__version__ = "0.1.0"

PROTOCOL_VERSION = 1

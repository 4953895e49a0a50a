"""golf: an open lab for the Parameter Golf 10 min / 16 MB track (PR #1533 record stack)."""

__version__ = "0.1.0"

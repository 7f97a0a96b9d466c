"""Tools run from a checkout, not part of the installed packages (``python -m tools.loadtest``)."""

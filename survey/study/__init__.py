"""The study room: the rating app, its storage and its tools (see ``survey``)."""

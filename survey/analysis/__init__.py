"""The analysis room: statistics on a validated ratings frame; never imports ``survey.study``."""

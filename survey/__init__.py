"""MOS study: rater sessions, the paper's protocol, ratings stored through SQLAlchemy."""

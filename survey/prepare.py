"""``python -m survey.prepare``: make a study's stimuli and register it (survey.study.prepare)."""

import sys

from survey.study.prepare import main

if __name__ == "__main__":
    sys.exit(main())

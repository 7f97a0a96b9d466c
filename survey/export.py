"""``python -m survey.export``: export, import or back up a study's ratings (survey.study.export)."""

import sys

from survey.study.export import main

if __name__ == "__main__":
    sys.exit(main())

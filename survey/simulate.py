"""``python -m survey.simulate``: write a simulated study's ratings with known truth (survey.analysis.simulate)."""

import sys

from survey.analysis.simulate import main

if __name__ == "__main__":
    sys.exit(main())

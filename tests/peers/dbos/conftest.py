"""The DBOS-derived tests import their helpers and flows from this folder (and so do the
child processes they start, through PYTHONPATH)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

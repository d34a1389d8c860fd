"""Makes tests/ importable (shared reference helpers such as janus_reference) from every test folder."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

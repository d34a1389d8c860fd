"""Makes tests/ importable (shared reference helpers such as janus_reference) from every test folder,
and keeps opt-in runs (`@pytest.mark.optin`: minutes long) out of the default suite unless `--optin`."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


def pytest_addoption(parser):
    parser.addoption("--optin", action="store_true", help="also run tests marked optin (long runs)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--optin"):
        return
    skip = pytest.mark.skip(reason="opt-in long run: pass --optin")
    for item in items:
        if "optin" in item.keywords:
            item.add_marker(skip)

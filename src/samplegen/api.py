"""`from samplegen import api`, the Python API as the README shows it; the code lives in samplegen.app.api."""

from samplegen.app.api import *  # noqa: F401,F403

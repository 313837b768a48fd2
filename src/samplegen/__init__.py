"""SampleGen: a learned space of single-note instrument sounds.

The public API mirrors the `samplegen` command's verbs; see README.md.
"""

__version__ = "0.1.0"

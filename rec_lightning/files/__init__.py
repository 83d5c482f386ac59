"""Files on disk: the data/output folder layout, output locks and the one atomic writer.

Core layer: plain Python, never Lightning.
"""

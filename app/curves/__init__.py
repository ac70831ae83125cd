"""Curves of metrics.csv files too big to read in the service's own process (issue 20): a reader process
(``worker``, driven by ``reader.ReaderProcess``) reads them while the route answers with a curve sampled
from the file (``sample``); ``reads.CurveReads`` decides which, for the route.

The parsing itself, and the cache of downsampled curves, is ``app/metricsfile.py``: the reader process
runs the same code, so its curves are exactly those the service would have read itself.
"""

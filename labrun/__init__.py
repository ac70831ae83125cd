"""``labrun``, the command line: submit, list, follow and cancel runs of a labrun service over its HTTP API.

It talks HTTP only (``LABRUN_URL``, ``LABRUN_TOKEN``) and imports neither torch, Hydra nor the service: a
researcher's laptop needs nothing but this package, httpx and rich. Modules: ``cli`` (arguments, commands,
exit codes), ``client`` (the HTTP API and its errors, in one place), ``render`` (tables, progress, text).
"""

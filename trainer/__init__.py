"""The experiment: ``python -m trainer [overrides]`` (see docs/experiment.md).

Light modules, shared with the service (no torch): ``config`` (compose, check, name, resolve),
``naming`` (run names), ``resolvers`` (the config's resolvers), ``rundir`` (the run directory),
``provenance`` (run.json), ``cancel`` (SIGTERM), ``runenv`` (the variables the service sets for a run),
``schema_docs`` (the config's documentation).
The run itself: ``cli`` (one run, start to end), ``train`` (Lightning objects from the config, fit),
``data`` (cache + data module), ``swe`` (batched shallow-water solves), ``model`` (SFNO/FNO module),
``callbacks`` (progress.json, stop on cancel).
"""

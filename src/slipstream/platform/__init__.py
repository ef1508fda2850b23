"""The platform: one service where a team imports models, runs optimization jobs, compares and deploys.

A REST API (``/api/v1``) over the same library the CLI calls: :mod:`.routes` per resource, :mod:`.jobs`
runs long work (optimize, evaluate, bench, search, import) in worker processes (:mod:`.worker`), each job
persisted in the store's registry with its state, progress and events.
"""

"""What a gateway's processes and replicas share (docs/operations.md, "Replicas").

One interface (:class:`base.SharedState`) with three implementations: the process itself
(:mod:`local`), the supervisor of ``workers: N`` (:mod:`hosted`), and Redis or Valkey under
``state:`` (:mod:`replicated`); :func:`build.build_state` picks one from the configuration.
"""

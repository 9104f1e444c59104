"""Self-improving prompts: Markdown prompt files whose metrics only verified
runs through the executor can move.

- :mod:`service.prompts.document`: the prompt file format (parse, render tables).
- :mod:`service.prompts.ledger`: records -> counts, status, graduation and reset rows.
- :mod:`service.prompts.verdict`: the pure judgement of one run's stored transcript.
- :mod:`service.prompts.records`: the ``prompts`` namespace of the store (SQL).
- :mod:`service.prompts.methods`: the wire methods ``prompts.record`` and ``prompts.records``.
- :mod:`service.prompts.runner`, :mod:`~service.prompts.audit`,
  :mod:`~service.prompts.report`: what ``cc-executor prompts`` does.
"""

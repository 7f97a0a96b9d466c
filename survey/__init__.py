"""The MOS study and its analysis, as two rooms that share one contract.

- ``survey.ratings``: the ratings contract (columns, score labels, condition roles, validation,
  CSV). Both rooms import it; it imports neither.
- ``survey.study``: the study app and its storage (database, rater sessions, the Gradio tabs,
  stimulus preparation, export/import/backup). It reads ratings out of storage as a validated
  frame and hands that to the analysis.
- ``survey.analysis``: statistics, rater screening, reliability, the report and the simulator.
  It never imports ``survey.study``: it works on a frame, wherever it came from.

Commands: ``python -m survey`` (the study server), ``python -m survey.prepare``,
``python -m survey.export``, ``python -m survey.report``, ``python -m survey.simulate``.
"""

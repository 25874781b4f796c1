"""zingest's benchmarks: zingest against the machine's own ceilings and the obvious alternatives.

``python -m benchmarks [--quick] [--out DIR]`` runs everything in one go on one
machine, against one PostgreSQL and the same generated ride rows (fixed seed),
each system as separate processes, and writes ``results.json``, ``report.md``
and PNG plots. See ``benchmarks/__main__.py`` for the plan and ``report.py``
for how each figure is measured.
"""

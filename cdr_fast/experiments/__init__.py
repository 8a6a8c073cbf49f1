"""Experiments: grids of runs (``grid``), the seed report's tables and figures (``report``), and
their command line, ``python -m cdr_fast.experiments`` (``cli``)."""

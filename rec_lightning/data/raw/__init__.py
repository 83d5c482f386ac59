"""Raw interaction logs -> the MiniOneRec layout (the ``prepare`` command).

``formats`` reads the published files (Amazon 2014 / 2018 / 2023 JSON lines, plain or gzipped, and a
generic CSV/Parquet table) as a stream; ``interactions`` holds the kept reviews as compact arrays
and applies the filters (rating, time window, metadata, iterative k-core); ``sequences`` orders
each user's interactions, indexes items, cuts sliding windows and splits them; ``writer`` writes
the data folder atomically; ``pipeline`` runs the steps and builds ``prepare_report.json``.
"""

"""Code shared by every stage: data types, errors, settings, atomic files, embedding backends, the
Chroma store, exact search and metrics.

Every other package (`ingest`, `adapter`, `search`, `eval`, `app`, `scripts`) imports from here and never copies it.
"""

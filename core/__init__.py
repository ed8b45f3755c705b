"""Code shared by every stage: data types, errors, atomic files, embedding backends, the Chroma store.

Stages (`ingest`, `adapter`, `eval`, `app`) import from here and never copy it.
"""

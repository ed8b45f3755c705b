"""Retrieval over a store, shared by eval and the app: exact and Chroma (HNSW) dense search, BM25 lexical
search, and the `Retriever` the page, the bench and the load script use. A number in the report is what
the page shows because both rank with this code."""

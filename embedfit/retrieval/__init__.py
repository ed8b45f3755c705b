"""Retrieval primitives: exact cosine search (`exact`), the BM25 index (`lexical`), and dense + BM25 fusion with its
choice on dev (`fusion`, `fusion_choice`). Selection trains through them, so they sit below the adapters; the search
service that applies an adapter sits above (`embedfit.search`)."""

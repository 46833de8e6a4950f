"""lmforge.data: readers and writers, cleaning steps (URL, HTML, normalisation, language ID, Gopher/C4/FineWeb
filters, PII), exact and MinHash LSH dedup, a TOML pipeline with an audit, a sample corpus with ground truth,
and tokenize-and-pack into memory-mapped shards with a resumable loader. Import the submodules directly.
"""

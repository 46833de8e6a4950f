"""Retrieval-augmented generation: embedders, chunking, a persistent hybrid index, answers with citations."""

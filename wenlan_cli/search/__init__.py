"""Image search: an updatable index of image vectors, text/image queries, exact top-k.

    from wenlan_cli.search import Searcher, load_index, update_index
    report = update_index("photos/", "photos.index", checkpoint="runs/demo")
    searcher = Searcher(load_index("photos.index"))
    results = searcher.search(texts=["红色的汽车"], k=5)

`search_vectors` is the exact chunked top-k underneath (ties: lower row first);
`search_faiss` the same through faiss' IndexFlatIP when faiss is installed.
"""

from .index import (
    ImageIndex,
    IndexReport,
    IndexRow,
    build_index,
    checkpoint_identity,
    load_index,
    update_index,
)
from .query import Hit, QueryResult, Searcher
from .topk import search_faiss, search_vectors

__all__ = [
    "Hit",
    "ImageIndex",
    "IndexReport",
    "IndexRow",
    "QueryResult",
    "Searcher",
    "build_index",
    "checkpoint_identity",
    "load_index",
    "search_faiss",
    "search_vectors",
    "update_index",
]

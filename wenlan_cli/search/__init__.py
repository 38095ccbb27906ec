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

# Queries need torch; `index` does not (`wenlan index --backend onnx` runs without it), so
# the query side is imported on first use.
_LAZY = {"Hit": "query", "QueryResult": "query", "Searcher": "query", "search_faiss": "topk", "search_vectors": "topk"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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

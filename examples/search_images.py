"""Index a folder of images and search it with Chinese text or with an image, from Python.

    python examples/search_images.py --checkpoint runs/demo --images IMAGE_DIR \
        --index runs/photos.index --query "左上角有两个红色圆形" --query "一个蓝色三角形" \
        [--image some.jpg] [-k 5] [--html results.html]

The first run encodes every image; later runs encode only new or changed files (the
same as `wenlan index IMAGE_DIR --out INDEX --checkpoint ...`). Queries are encoded
with the checkpoint the index records; scores are cosine similarities.
The command-line equivalent of the search is `wenlan search "..." --index INDEX`.
"""

from __future__ import annotations

import argparse

from wenlan_cli.search import Searcher, update_index


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    parser.add_argument("--images", required=True, help="folder of images to index")
    parser.add_argument("--index", default="runs/search.index", help="index folder (created or updated)")
    parser.add_argument("--query", action="append", default=[], help="Chinese text query (repeatable)")
    parser.add_argument("--image", action="append", default=[], help="query image (repeatable)")
    parser.add_argument("-k", type=int, default=5, help="results per query")
    parser.add_argument("--html", help="also write a page of thumbnails here")
    args = parser.parse_args(argv)
    if not args.query and not args.image:
        parser.error("give at least one --query or --image")

    report = update_index(args.images, args.index, args.checkpoint, skip_bad=True)
    print(f"index: {report.summary()}")

    searcher = Searcher(report.index)
    results = searcher.search(texts=args.query, images=args.image, k=args.k)
    for result in results:
        print(f"\n{result.query}")
        for hit in result.hits:
            print(f"  {hit.rank}. {hit.score:.3f}  {hit.path}")
    if args.html:
        from wenlan_cli.search.html import write_html

        print(f"\nwrote {write_html(results, args.html)}")


if __name__ == "__main__":
    main()

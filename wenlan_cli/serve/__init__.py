"""`wenlan serve`: an index made by `wenlan index` as a web service and a search page.

    from wenlan_cli.serve import ServeSettings, create_app
    app = create_app(ServeSettings(index=Path("photos.index")))   # an ASGI app (FastAPI)
    # uvicorn.run(app, host="127.0.0.1", port=8000)

Needs the ``serve`` extra (fastapi, uvicorn, python-multipart).
"""

from .app import ServeSettings, create_app
from .batching import MicroBatcher
from .live_index import LiveIndex, Snapshot, image_id

__all__ = ["LiveIndex", "MicroBatcher", "ServeSettings", "Snapshot", "create_app", "image_id"]

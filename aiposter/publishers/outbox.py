"""The ``outbox`` publisher: the dry-run destination.

Each post becomes ``post-<post>-<target>.jpg`` and ``post-<post>-<target>.json`` in the outbox
directory. The JPEG is written first and the JSON last, both atomically (write, fsync, rename), so the
JSON's presence means the post is complete; :meth:`recover` answers from exactly that. One step:
``publish`` always answers :class:`Published`.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from aiposter.config import Config
from aiposter.core.errors import PublishError
from aiposter.core.ports import Published, PublishRequest
from aiposter.images import write_atomic


class OutboxPublisher:
    platform = "outbox"

    def __init__(self, cfg: Config):
        self.directory = Path(cfg.publishers.outbox.directory)

    def _stem(self, req: PublishRequest) -> str:
        return f"post-{req.post_id}-{req.target_id}"

    def publish(self, req: PublishRequest) -> Published:
        stem = self._stem(req)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / f".{stem}.jpg.tmp"
            shutil.copyfile(req.media_path, tmp)
            tmp.replace(self.directory / f"{stem}.jpg")
            record = {
                "id": stem,
                "post_id": req.post_id,
                "target_id": req.target_id,
                "source_file": req.file_name,
                "caption": req.caption,
                "alt_text": req.alt_text,
                "image": f"{stem}.jpg",
                "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            write_atomic(self.directory / f"{stem}.json",
                         json.dumps(record, ensure_ascii=False, indent=2).encode())
        except FileNotFoundError as exc:
            raise PublishError(f"prepared image missing: {exc.filename}", permanent=True,
                               code="media_missing") from None
        except OSError as exc:
            raise PublishError(f"cannot write to outbox {self.directory}: {exc.strerror}",
                               code="io") from None
        return Published(platform_post_id=stem, url=(self.directory / f"{stem}.json").resolve().as_uri())

    def recover(self, req: PublishRequest) -> Published | None:
        record = self.directory / f"{self._stem(req)}.json"
        if record.exists():
            return Published(platform_post_id=self._stem(req), url=record.resolve().as_uri())
        return None


def build(deps) -> OutboxPublisher:
    return OutboxPublisher(deps.cfg)

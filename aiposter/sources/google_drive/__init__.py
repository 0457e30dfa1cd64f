"""Google Drive as a source: one change feed per connected account, routed to its watched folders.

Phase 1 (this package) is the adapter: plain values in, plain dataclasses out, every fault a
:class:`~aiposter.core.errors.SourceError` with a code from the shared vocabulary. Phase 2 wires it into
the pipeline (a per-connection poll task, page token per connection, registry, credentials store,
pauses, API/CLI). See ``docs/drive.md``.

Modules: :mod:`.client` (the Drive v3 client, downloads, revoke), :mod:`.feed` (change routing,
listings, resync, what counts as new), :mod:`.folders` (links, folder checks, picker), :mod:`.push`
(``changes.watch`` channels), :mod:`.errors` (fault mapping).
"""

from aiposter.sources.google_drive.client import (
    DEFAULT_IMAGE_TYPES,
    Change,
    ChangeBatch,
    Downloaded,
    DriveClient,
    DriveFile,
    DriveSettings,
    RevokeResult,
    revoke_token,
)
from aiposter.sources.google_drive.errors import ResyncNeeded
from aiposter.sources.google_drive.feed import (
    CONTENT_CHANGED,
    DUPLICATE,
    NEW,
    UNCHANGED,
    AncestryCache,
    FeedPoll,
    FolderEvent,
    FolderListing,
    Resync,
    WatchProblem,
    WatchSpec,
    classify,
    list_watch,
    poll_changes,
    resync,
)
from aiposter.sources.google_drive.folders import (
    FolderInfo,
    FolderLinkError,
    FolderPage,
    check_folder,
    list_folders,
    parse_folder_id,
)
from aiposter.sources.google_drive.push import (
    Notification,
    PushChannel,
    PushRejected,
    channel_id_of,
    renew,
    renew_due,
    subscribe,
    unsubscribe,
    verify_notification,
)
from aiposter.sources.google_drive.source import DriveSource, build, validate_folder

__all__ = [
    "CONTENT_CHANGED", "DEFAULT_IMAGE_TYPES", "DUPLICATE", "NEW", "UNCHANGED", "AncestryCache", "Change",
    "ChangeBatch", "Downloaded", "DriveClient", "DriveSource", "DriveFile", "DriveSettings", "FeedPoll", "FolderEvent",
    "FolderInfo", "FolderLinkError", "FolderListing", "FolderPage", "Notification", "PushChannel", "PushRejected",
    "Resync", "ResyncNeeded", "RevokeResult", "WatchProblem", "WatchSpec", "channel_id_of", "check_folder",
    "build", "classify", "list_folders", "list_watch", "parse_folder_id", "poll_changes", "renew", "renew_due",
    "resync", "revoke_token", "subscribe", "unsubscribe", "validate_folder", "verify_notification",
]

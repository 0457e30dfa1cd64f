"""One change feed per Drive account, routed to the watched folders; listings for baselines and resyncs.

**Polling** (:func:`poll_changes`): one ``changes.list`` from the connection's stored page token covers
every folder the account watches, so an idle poll costs one request however many folders are watched.
Each change is routed to the watches whose folder holds the file now: directly (the file's parent is the
watched folder) or, for ``include_subfolders`` watches, through its ancestors. Ancestry comes from an
:class:`AncestryCache` kept per connection; folder changes in the feed keep it current (a moved folder
is a change to that folder), and one ``files.get`` fills each unknown folder once.

**What the feed reports, and what the caller decides.** The feed reports the *current* state: "image X
is now in watch W's folder" (:class:`FolderEvent`), "file X left" (trashed, removed, or no longer in any
watched folder), and per-watch folder problems. Whether an event is *new* depends on what the watch has
already seen, which lives in the database: :func:`classify` makes that decision from the caller's
``seen`` map, so a rename, a description edit or a re-upload of the same bytes is ``unchanged``, a new
``md5Checksum`` is ``content_changed`` (not posted again by default), and a file created, uploaded,
copied or moved into the folder is ``new`` with ``seen_at`` (when the change was seen) as its arrival.

**Listings** (:func:`list_watch`) read a folder with ``files.list`` (all pages; up to 1000 files per
request), for a watch's first baseline or a backfill. :func:`resync` is the answer to a rejected page
token: a fresh start token first, then a listing of every watch; comparing it with ``seen`` posts only
what arrived meanwhile.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiposter.core import image_types
from aiposter.core.errors import SourceError
from aiposter.sources.google_drive.client import (
    DEFAULT_IMAGE_TYPES,
    FOLDER_MIME,
    SHORTCUT_MIME,
    DriveClient,
    DriveFile,
    quote,
)
from aiposter.sources.google_drive.folders import FolderInfo, check_folder

MAX_DEPTH = 64          # folder nesting followed upwards before giving up (cycles cannot happen, but be safe)
PARENTS_PER_QUERY = 20  # folders listed by one files.list ("'a' in parents or 'b' in parents ...")

NEW, UNCHANGED, DUPLICATE, CONTENT_CHANGED = "new", "unchanged", "duplicate", "content_changed"
_GONE = ("not_found", "forbidden")  # an item this account cannot see (any other error fails the poll)


@dataclass(frozen=True)
class WatchSpec:
    """What the feed needs to know about one watch."""

    key: Hashable                       # the watch id, echoed back on events
    folder_id: str
    include_subfolders: bool = False
    image_types: tuple[str, ...] = DEFAULT_IMAGE_TYPES
    drive_id: str | None = None         # the shared drive holding the folder (from check_folder); None: My Drive


@dataclass(frozen=True)
class FolderEvent:
    """An image that is in a watch's folder now (a shortcut carries its target's content fields)."""

    watch: Hashable
    file: DriveFile
    seen_at: datetime                   # the arrival time: when this poll saw the change
    change_time: datetime | None = None  # Drive's time of the change
    via: str = "change"                 # "change", "folder_arrived" (listed: its folder moved in), "listing"
    selected: bool = True               # False: an image of a type the watch does not take (not posted)


@dataclass(frozen=True)
class WatchProblem:
    watch: Hashable
    error: SourceError                  # permanent, with a message for the user


@dataclass
class FeedPoll:
    new_token: str                      # store it on the connection (after committing the events)
    complete: bool                      # False: a backlog remains; poll again without waiting
    events: list[FolderEvent] = field(default_factory=list)
    left: dict[str, str] = field(default_factory=dict)  # file id -> "trashed" | "removed" | "moved_out"
    problems: list[WatchProblem] = field(default_factory=list)
    requests: int = 0


@dataclass
class FolderListing:
    watch: Hashable
    folder: FolderInfo
    files: list[DriveFile]
    requests: int = 0


@dataclass
class Resync:
    new_token: str
    listings: dict[Hashable, FolderListing]
    problems: list[WatchProblem] = field(default_factory=list)
    requests: int = 0


@dataclass(frozen=True)
class _Node:
    parents: tuple[str, ...]
    trashed: bool = False


class AncestryCache:
    """folder id -> parents, for one connection, valid while the feed is read without gaps.

    ``synced_token`` is the page token up to which folder changes were applied. If a poll starts from
    another token (another replica read the feed meanwhile, or a resync), the cache may have missed a
    folder move, so :func:`poll_changes` clears it first. Bounded (least recently used out).
    """

    def __init__(self, max_entries: int = 20_000):
        self.max_entries = max_entries
        self.synced_token: str | None = None
        self._nodes: OrderedDict[str, _Node] = OrderedDict()
        self.lookups = 0               # files.get requests made to fill it

    def __len__(self) -> int:
        return len(self._nodes)

    def clear(self) -> None:
        self._nodes.clear()
        self.synced_token = None

    def get(self, folder_id: str) -> _Node | None:
        node = self._nodes.get(folder_id)
        if node is not None:
            self._nodes.move_to_end(folder_id)
        return node

    def put(self, folder_id: str, parents: Iterable[str], trashed: bool = False) -> None:
        self._nodes[folder_id] = _Node(tuple(parents), trashed)
        self._nodes.move_to_end(folder_id)
        while len(self._nodes) > self.max_entries:
            self._nodes.popitem(last=False)

    def forget(self, folder_id: str) -> None:
        self._nodes.pop(folder_id, None)

    def parents_of(self, client: DriveClient, folder_id: str) -> tuple[str, ...]:
        node = self.get(folder_id)
        if node is None:
            self.lookups += 1
            try:
                f = client.get_file(folder_id, f"reading the parents of folder {folder_id}",
                                    fields="id,mimeType,parents,trashed")
                node = _Node(f.parents, f.trashed)
            except SourceError as exc:
                if exc.code not in _GONE:
                    raise
                node = _Node(())        # gone or not visible: nothing above it that we can watch
            self.put(folder_id, node.parents, node.trashed)
        return node.parents


def classify(file: DriveFile, seen: Mapping[str, str | None], seen_md5s: Container[str] = (), *,
             repost_changed_content: bool = False) -> str:
    """Is this event new for a watch? ``seen``: file id -> md5 of what the watch already recorded;
    ``seen_md5s``: the md5s it already posted (so the same photo uploaded again as another file is a
    ``duplicate``, not a second post)."""
    if file.id in seen:
        before = seen[file.id]
        if before == file.md5 or file.md5 is None:
            return UNCHANGED
        return NEW if repost_changed_content else CONTENT_CHANGED
    if file.md5 and file.md5 in seen_md5s:
        return DUPLICATE
    return NEW


class _Router:
    """Which watches a file or folder belongs to, and shortcut resolution, for one poll or listing."""

    def __init__(self, client: DriveClient, watches: list[WatchSpec], cache: AncestryCache):
        self.client, self.cache = client, cache
        self.by_folder: dict[str, list[WatchSpec]] = {}
        for w in watches:
            self.by_folder.setdefault(w.folder_id, []).append(w)
        self.any_subtree = any(w.include_subfolders for w in watches)
        # Every image type the pipeline reads, not only the watches' choices: an image of a type a watch
        # does not take is reported to it as not selected (recorded with that reason), not as gone.
        self.types = frozenset(image_types.SUPPORTED).union(t for w in watches for t in w.image_types)
        self.targets: dict[str, DriveFile | None] = {}

    def watches_for(self, parents: Iterable[str], *, subtree_only: bool = False) -> list[WatchSpec]:
        hits: dict[Hashable, WatchSpec] = {}
        for p in parents:
            for w in self.by_folder.get(p, ()):
                if w.include_subfolders or not subtree_only:
                    hits[w.key] = w
            if not self.any_subtree:
                continue
            cur, depth = p, 0
            while depth < MAX_DEPTH:
                ups = self.cache.parents_of(self.client, cur)
                if not ups:
                    break
                cur, depth = ups[0], depth + 1
                for w in self.by_folder.get(cur, ()):
                    if w.include_subfolders:
                        hits[w.key] = w
        return list(hits.values())

    def resolve(self, f: DriveFile) -> DriveFile | None:
        """The image this item stands for (a shortcut's target merged in), or None if it is not one."""
        if f.is_shortcut:
            if not f.target_id or f.target_mime not in self.types:
                return None
            if f.target_id not in self.targets:
                try:
                    self.targets[f.target_id] = self.client.get_file(f.target_id, f"following shortcut {f.name}")
                except SourceError as exc:
                    if exc.code not in _GONE:
                        raise
                    self.targets[f.target_id] = None
            t = self.targets[f.target_id]
            if t is None or t.trashed or t.mime_type not in self.types:
                return None
            return DriveFile(id=f.id, name=f.name, mime_type=t.mime_type, parents=f.parents, md5=t.md5, size=t.size,
                             created_time=f.created_time, modified_time=t.modified_time,
                             description=f.description or t.description, trashed=False, drive_id=f.drive_id,
                             target_id=t.id, target_mime=t.mime_type)
        if f.is_native or f.mime_type not in self.types:
            return None
        return f


def poll_changes(client: DriveClient, token: str, watches: Iterable[WatchSpec], *,
                 cache: AncestryCache | None = None, seen_at: datetime | None = None) -> FeedPoll:
    """Read the account's changes since ``token`` and route them to ``watches``.

    Raises :class:`~aiposter.sources.google_drive.errors.ResyncNeeded` when Drive rejects the token, and
    transient :class:`SourceError` s (the token is not advanced: the same poll can simply run again).
    """
    watches = list(watches)
    cache = cache if cache is not None else AncestryCache()
    if cache.synced_token != token:
        cache.clear()
    cache.synced_token = None  # dirty until this poll completes: a failed poll must not leave half-applied moves
    seen_at = seen_at or datetime.now(UTC)
    before = client.request_count
    batch = client.read_changes(token)
    router = _Router(client, watches, cache)
    result = FeedPoll(batch.new_token, batch.complete)
    watched = router.by_folder

    # Folder changes first: the cache must reflect moves before files are routed through it.
    moved_folders: list[DriveFile] = []
    for c in batch.changes:
        if c.removed and c.file_id:
            cache.forget(c.file_id)
        elif c.file is not None and c.file.is_folder:
            old = cache.get(c.file.id)
            if old is None or old.parents != c.file.parents or (old.trashed and not c.file.trashed):
                moved_folders.append(c.file)
            cache.put(c.file.id, c.file.parents, c.file.trashed)

    problems: dict[Hashable, SourceError] = {}
    for c in batch.changes:
        if c.change_type == "drive":
            if c.removed:
                for w in watches:
                    if w.drive_id and w.drive_id == c.drive_id:
                        problems[w.key] = SourceError(
                            "this Google account no longer has access to the shared drive holding the folder",
                            permanent=True, code="folder_not_found")
            continue
        fid = c.file_id or (c.file.id if c.file else None)
        if fid is None:
            continue
        if fid in watched:
            if c.removed or c.file is None:
                err = SourceError("the watched Drive folder was deleted, or this Google account lost access to it",
                                  permanent=True, code="folder_not_found")
            elif c.file.trashed:
                err = SourceError(f"the watched Drive folder {c.file.name!r} was moved to the trash",
                                  permanent=True, code="folder_trashed")
            else:
                err = None
            for w in watched[fid]:
                if err is not None:
                    problems[w.key] = err
            if err is not None:
                continue
        if c.removed or c.file is None:
            result.left[fid] = "removed"
            continue
        f = c.file
        if f.is_folder:
            continue
        if f.trashed:
            result.left[fid] = "trashed"
            continue
        image = router.resolve(f)
        if image is None:
            continue
        hits = router.watches_for(f.parents)
        if not hits:
            result.left[fid] = "moved_out"
            continue
        for w in hits:
            result.events.append(FolderEvent(w.key, image, seen_at, c.time,
                                             selected=image.mime_type in w.image_types))

    # A folder that moved into a watched tree brings its files along, but Drive reports only the folder.
    if router.any_subtree:
        for folder in moved_folders:
            if folder.trashed or folder.id in watched:
                continue
            for w in router.watches_for(folder.parents, subtree_only=True):
                for image in _list_tree(client, router, [folder.id], w, recursive=True):
                    result.events.append(FolderEvent(w.key, image, seen_at, None, via="folder_arrived"))

    result.problems = [WatchProblem(k, e) for k, e in problems.items()]
    cache.synced_token = batch.new_token
    result.requests = client.request_count - before
    return result


def _list_tree(client: DriveClient, router: _Router, roots: list[str], watch: WatchSpec, *,
               recursive: bool) -> list[DriveFile]:
    """Every image under ``roots`` (and their subfolders when ``recursive``), shortcuts resolved."""
    kinds = [f"mimeType contains {quote('image/')}", f"mimeType = {quote(SHORTCUT_MIME)}"]
    if recursive:
        kinds.append(f"mimeType = {quote(FOLDER_MIME)}")
    out: list[DriveFile] = []
    queue, done = list(roots), set()
    while queue:
        group = [p for p in queue[:PARENTS_PER_QUERY] if p not in done]
        queue = queue[PARENTS_PER_QUERY:]
        if not group:
            continue
        done.update(group)
        q = (f"({' or '.join(f'{quote(p)} in parents' for p in group)}) and trashed = false and "
             f"({' or '.join(kinds)})")
        for page in client.iter_files(q, drive_id=watch.drive_id, what="listing a watched Drive folder"):
            for f in page:
                if f.is_folder:
                    router.cache.put(f.id, f.parents)
                    if recursive:
                        queue.append(f.id)
                    continue
                image = router.resolve(f)
                if image is not None and image.mime_type in watch.image_types:
                    out.append(image)
    return out


def list_watch(client: DriveClient, watch: WatchSpec, *, cache: AncestryCache | None = None) -> FolderListing:
    """Everything a watch's folder holds now (a baseline, a backfill, or one part of a resync).

    Raises a permanent :class:`SourceError` naming what is wrong when the folder is gone, trashed, not a
    folder or not listable (see :func:`~aiposter.sources.google_drive.folders.check_folder`).
    """
    before = client.request_count
    folder = check_folder(client, watch.folder_id)
    if folder.drive_id != watch.drive_id:
        watch = WatchSpec(watch.key, folder.id, watch.include_subfolders, watch.image_types, folder.drive_id)
    router = _Router(client, [watch], cache if cache is not None else AncestryCache())
    files = _list_tree(client, router, [folder.id], watch, recursive=watch.include_subfolders)
    return FolderListing(watch.key, folder, files, client.request_count - before)


def resync(client: DriveClient, watches: Iterable[WatchSpec], *, cache: AncestryCache | None = None) -> Resync:
    """After a rejected page token: a fresh token first (so nothing falls between the listing and the
    next poll), then a listing of every watch. Compare each listing with the watch's ``seen`` map."""
    before = client.request_count
    token = client.start_page_token()
    if cache is not None:
        cache.clear()
    out = Resync(token, {})
    for w in watches:
        try:
            out.listings[w.key] = list_watch(client, w, cache=cache)
        except SourceError as exc:
            if not exc.code or not exc.code.startswith(("folder_", "not_a_folder")):
                raise
            out.problems.append(WatchProblem(w.key, exc))
    if cache is not None:
        cache.synced_token = token
    out.requests = client.request_count - before
    return out

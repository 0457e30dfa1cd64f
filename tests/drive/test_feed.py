"""The change feed through the real google-api-python-client against the fake Drive: routing, what counts
as new, shortcuts, shared drives, subfolders, resync, and the request counts that make it scale."""

from __future__ import annotations

import pytest
from fakes.drive import SHORTCUT

from aiposter.sources.google_drive import (
    CONTENT_CHANGED,
    DUPLICATE,
    NEW,
    UNCHANGED,
    AncestryCache,
    DriveClient,
    ResyncNeeded,
    WatchSpec,
    classify,
    list_watch,
    poll_changes,
    resync,
)

from .conftest import settings_for


class Watcher:
    """What phase 2 will do with the database, in memory: a token per connection, seen files per watch."""

    def __init__(self, client, watches):
        self.client, self.watches = client, watches
        self.token = client.start_page_token()
        self.cache = AncestryCache()
        self.seen: dict = {w.key: {} for w in watches}
        self.posted: dict = {w.key: [] for w in watches}
        self.verdicts: list = []

    def poll(self):
        result = poll_changes(self.client, self.token, self.watches, cache=self.cache)
        for ev in result.events:
            if not ev.selected:  # an image of a type the watch does not take: the poller skips it
                continue
            seen = self.seen[ev.watch]
            verdict = classify(ev.file, seen, {m for m in seen.values() if m})
            self.verdicts.append((ev.watch, ev.file.name, verdict))
            if verdict == NEW:
                self.posted[ev.watch].append(ev.file.name)
            seen[ev.file.id] = ev.file.md5
        self.token = result.new_token
        return result


@pytest.fixture
def photos(fake):
    return fake.add_folder("Photos")


def test_idle_poll_costs_one_request_for_100_watched_folders(fake, client):
    folders = [fake.add_folder(f"F{i}") for i in range(100)]
    watches = [WatchSpec(i, f, include_subfolders=(i % 2 == 0)) for i, f in enumerate(folders)]
    w = Watcher(client, watches)
    fake.reset_counts()
    for _ in range(3):
        result = w.poll()
        assert result.events == [] and result.complete
    assert fake.counts == {"changes.list": 3}
    assert result.requests == 1


def test_created_uploaded_copied_and_moved_in_are_new_with_arrival_when_seen(fake, client, photos):
    elsewhere = fake.add_folder("Elsewhere")
    old = fake.add_file("old.jpg", elsewhere, content=b"old-photo", age=30 * 86400)
    other = fake.add_file("other.jpg", elsewhere, content=b"other-photo")
    w = Watcher(client, [WatchSpec("w", photos)])
    fake.add_file("new.jpg", photos, content=b"new-photo")
    fake.copy(other, photos)
    fake.move(old, photos)
    result = w.poll()
    assert sorted(w.posted["w"]) == ["Copy of other.jpg", "new.jpg", "old.jpg"]
    moved = next(e for e in result.events if e.file.name == "old.jpg")
    # arrival = when the poll saw it, not the file's (older) creation time: maximum_age does not skip it
    assert (moved.seen_at - moved.file.created_time).days >= 29
    assert w.poll().events == []  # nothing twice


def test_rename_description_and_same_content_reupload_are_not_new(fake, client, photos):
    w = Watcher(client, [WatchSpec("w", photos)])
    fid = fake.add_file("a.jpg", photos, content=b"A")
    w.poll()
    fake.rename(fid, "renamed.jpg")
    fake.set_description(fid, "a caption hint")
    fake.reupload_same(fid)
    result = w.poll()
    assert [e.file.description for e in result.events] == ["a caption hint"]  # coalesced: one change per file
    assert w.verdicts[-1] == ("w", "renamed.jpg", UNCHANGED)
    assert w.posted["w"] == ["a.jpg"]


def test_changed_content_is_reported_not_reposted_and_same_bytes_as_new_file_is_a_duplicate(fake, client, photos):
    w = Watcher(client, [WatchSpec("w", photos)])
    fid = fake.add_file("a.jpg", photos, content=b"A")
    w.poll()
    fake.set_content(fid, b"A, edited")
    w.poll()
    assert w.verdicts[-1] == ("w", "a.jpg", CONTENT_CHANGED)
    fake.add_file("a (1).jpg", photos, content=b"A, edited")
    w.poll()
    assert w.verdicts[-1] == ("w", "a (1).jpg", DUPLICATE)
    assert w.posted["w"] == ["a.jpg"]
    f = next(iter(w.seen["w"]))
    assert classify(client.get_file(f), {f: "old-md5"}, repost_changed_content=True) == NEW


def test_trashed_removed_and_moved_out_files_are_reported_as_left(fake, client, photos):
    other = fake.add_folder("Other")
    a, b, c = (fake.add_file(n, photos, content=n.encode()) for n in ("a.jpg", "b.jpg", "c.jpg"))
    w = Watcher(client, [WatchSpec("w", photos)])
    fake.trash(a)
    fake.delete(b)
    fake.move(c, other)
    result = w.poll()
    assert result.events == []
    assert result.left == {a: "trashed", b: "removed", c: "moved_out"}


def test_google_native_files_and_non_images_are_ignored_not_errors(fake, client, photos):
    w = Watcher(client, [WatchSpec("w", photos)])
    fake.add_native("Notes", photos)
    fake.add_native("Budget", photos, mime="application/vnd.google-apps.spreadsheet")
    fake.add_file("clip.mp4", photos, mime="video/mp4")
    fake.add_file("doc.pdf", photos, mime="application/pdf")
    fake.add_file("pic.heic", photos, mime="image/heic", content=b"heic")
    result = w.poll()
    assert [e.file.name for e in result.events] == ["pic.heic"]
    assert result.problems == []


def test_image_types_are_configurable_per_watch(fake, client, photos):
    w = Watcher(client, [WatchSpec("jpeg-only", photos, image_types=("image/jpeg",)), WatchSpec("all", photos)])
    fake.add_file("a.png", photos, mime="image/png", content=b"png")
    fake.add_file("b.jpg", photos, content=b"jpg")
    result = w.poll()
    assert w.posted == {"jpeg-only": ["b.jpg"], "all": ["a.png", "b.jpg"]}
    assert [(e.watch, e.file.name) for e in result.events if not e.selected] == [("jpeg-only", "a.png")]


def test_shortcuts_to_images_resolve_to_their_target(fake, client, photos):
    archive = fake.add_folder("Archive")
    target = fake.add_file("beach.jpg", archive, content=b"beach")
    doc = fake.add_native("Doc", archive)
    w = Watcher(client, [WatchSpec("w", photos)])
    sc = fake.add_shortcut(target, photos)
    fake.add_shortcut(doc, photos)
    result = w.poll()
    [ev] = result.events
    assert ev.file.id == sc and ev.file.content_id == target
    assert ev.file.mime_type == "image/jpeg" and ev.file.md5 == client.get_file(target).md5
    assert client.get_file(sc).mime_type == SHORTCUT


def test_shared_drive_folders_are_watched_through_the_same_feed(fake, client):
    team = fake.add_shared_drive("Team")
    shots = fake.add_folder("Shots", team)
    mine = fake.add_folder("Mine")
    w = Watcher(client, [WatchSpec("team", shots, drive_id=team), WatchSpec("mine", mine)])
    fake.add_file("t.jpg", shots, content=b"t")
    fake.add_file("m.jpg", mine, content=b"m")
    fake.reset_counts()
    result = w.poll()
    assert fake.counts == {"changes.list": 1}
    assert {(e.watch, e.file.name, e.file.drive_id) for e in result.events} == {
        ("team", "t.jpg", team), ("mine", "m.jpg", None)}
    listing = list_watch(client, WatchSpec("team", shots, drive_id=team))
    assert [f.name for f in listing.files] == ["t.jpg"] and listing.folder.drive_id == team


def test_losing_a_shared_drive_or_a_watched_folder_is_a_problem_for_that_watch_only(fake, client, photos):
    team = fake.add_shared_drive("Team")
    shots = fake.add_folder("Shots", team)
    gone = fake.add_folder("Gone")
    trashed = fake.add_folder("Trashed")
    watches = [WatchSpec("team", shots, drive_id=team), WatchSpec("gone", gone), WatchSpec("trashed", trashed),
               WatchSpec("ok", photos)]
    w = Watcher(client, watches)
    fake.leave_shared_drive(team)
    fake.delete(gone)
    fake.trash(trashed)
    fake.add_file("fine.jpg", photos, content=b"fine")
    result = w.poll()
    problems = {p.watch: p.error for p in result.problems}
    assert set(problems) == {"team", "gone", "trashed"}
    assert all(e.permanent for e in problems.values())
    assert problems["trashed"].code == "folder_trashed" and "Trashed" in str(problems["trashed"])
    assert problems["gone"].code == "folder_not_found"
    assert w.posted["ok"] == ["fine.jpg"]


def test_subfolders_route_through_the_ancestry_cache_with_few_lookups(fake, client, photos):
    a = fake.add_folder("2026", photos)
    b = fake.add_folder("June", a)
    unrelated = fake.add_folder("Unrelated")
    w = Watcher(client, [WatchSpec("deep", photos, include_subfolders=True), WatchSpec("flat", photos)])
    fake.add_file("deep.jpg", b, content=b"d")
    fake.add_file("top.jpg", photos, content=b"t")
    fake.add_file("x.jpg", unrelated, content=b"x")
    fake.reset_counts()
    w.poll()
    assert w.posted == {"deep": ["deep.jpg", "top.jpg"], "flat": ["top.jpg"]}
    first = fake.counts["files.get"]
    fake.add_file("deep2.jpg", b, content=b"d2")
    fake.add_file("x2.jpg", unrelated, content=b"x2")
    fake.reset_counts()
    w.poll()
    assert w.posted["deep"][-1] == "deep2.jpg"
    assert fake.counts == {"changes.list": 1}  # every folder above was cached by the first poll
    assert first == 5  # one lookup per distinct folder above a file: June, 2026, Photos, My Drive, Unrelated


def test_a_folder_moved_into_a_watched_tree_brings_its_images(fake, client, photos):
    trip = fake.add_folder("Trip")
    inner = fake.add_folder("Day 1", trip)
    fake.add_file("t1.jpg", trip, content=b"t1")
    fake.add_file("t2.jpg", inner, content=b"t2")
    w = Watcher(client, [WatchSpec("deep", photos, include_subfolders=True), WatchSpec("flat", photos)])
    w.poll()
    fake.move(trip, photos)
    result = w.poll()
    assert sorted(w.posted["deep"]) == ["t1.jpg", "t2.jpg"]
    assert w.posted["flat"] == []
    assert {e.via for e in result.events} == {"folder_arrived"}
    fake.rename(trip, "Trip 2026")  # a rename lists nothing again
    fake.reset_counts()
    w.poll()
    assert fake.counts == {"changes.list": 1}


def test_many_changes_follow_next_page_token_until_new_start_page_token(fake, photos):
    client = DriveClient(fake.issue_tokens(), settings_for(fake, page_size=50))
    w = Watcher(client, [WatchSpec("w", photos)])
    fake.add_files(photos, 120)
    fake.reset_counts()
    w.poll()
    assert len(w.posted["w"]) == 120
    assert fake.counts == {"changes.list": 3}


def test_a_backlog_is_read_over_several_polls_without_losing_changes(fake, photos):
    client = DriveClient(fake.issue_tokens(), settings_for(fake, page_size=10, max_change_pages=2))
    w = Watcher(client, [WatchSpec("w", photos)])
    fake.add_files(photos, 45)
    results = [w.poll() for _ in range(3)]
    assert [r.complete for r in results] == [False, False, True]
    assert len(w.posted["w"]) == 45 == len(set(w.posted["w"]))


def test_rejected_page_token_resyncs_without_reposting(fake, client, photos):
    w = Watcher(client, [WatchSpec("w", photos)])
    fake.add_file("a.jpg", photos, content=b"a")
    w.poll()
    fake.expire_page_tokens()
    fake.add_file("b.jpg", photos, content=b"b")
    with pytest.raises(ResyncNeeded) as err:
        w.poll()
    assert err.value.code == "resync"
    with pytest.raises(ResyncNeeded):
        poll_changes(client, "not-a-token", w.watches)
    r = resync(client, w.watches, cache=w.cache)
    new = [f.name for f in r.listings["w"].files if classify(f, w.seen["w"]) == NEW]
    assert new == ["b.jpg"]  # a.jpg was seen before the token broke
    w.token = r.new_token
    fake.add_file("c.jpg", photos, content=b"c")
    assert [e.file.name for e in w.poll().events] == ["c.jpg"]


def test_baseline_of_a_large_folder_pages_through_files_list(fake, client, photos):
    fake.add_files(photos, 2500)
    fake.add_native("Doc", photos)
    fake.reset_counts()
    listing = list_watch(client, WatchSpec("w", photos))
    assert len(listing.files) == 2500
    assert fake.counts == {"files.get": 1, "files.list": 3}  # the folder check, then 1000 per page
    assert listing.requests == 4 and listing.folder.name == "Photos"


def test_baseline_with_subfolders_and_shortcuts(fake, client, photos):
    sub = fake.add_folder("Sub", photos)
    fake.add_file("top.jpg", photos, content=b"top")
    fake.add_file("sub.png", sub, mime="image/png", content=b"sub")
    target = fake.add_file("far.jpg", fake.add_folder("Far"), content=b"far")
    fake.add_shortcut(target, sub, name="link to far")
    fake.trash(fake.add_file("binned.jpg", photos, content=b"bin"))
    flat = list_watch(client, WatchSpec("w", photos))
    deep = list_watch(client, WatchSpec("w", photos, include_subfolders=True))
    assert [f.name for f in flat.files] == ["top.jpg"]
    assert sorted(f.name for f in deep.files) == ["link to far", "sub.png", "top.jpg"]
    assert next(f for f in deep.files if f.name == "link to far").content_id == target


def test_a_transient_error_mid_poll_leaves_the_token_usable(fake, client, photos):
    w = Watcher(client, [WatchSpec("w", photos, include_subfolders=True)])
    sub = fake.add_folder("Sub", photos)
    fake.add_file("s.jpg", sub, content=b"s")
    fake.fail_next("files.get", 503)
    with pytest.raises(Exception) as err:
        w.poll()
    assert getattr(err.value, "code", None) == "server_error" and not err.value.permanent
    w.poll()  # same token again: nothing lost
    assert w.posted["w"] == ["s.jpg"]


def test_resync_reports_a_lost_folder_for_that_watch_and_lists_the_others(fake, client, photos):
    gone = fake.add_folder("Gone")
    fake.add_file("a.jpg", photos, content=b"a")
    fake.delete(gone)
    r = resync(client, [WatchSpec("ok", photos), WatchSpec("gone", gone)])
    assert [f.name for f in r.listings["ok"].files] == ["a.jpg"]
    [problem] = r.problems
    assert problem.watch == "gone" and problem.error.code == "folder_not_found" and problem.error.permanent
    assert r.new_token == client.start_page_token()


def test_an_auth_failure_while_resolving_ancestry_fails_the_poll_instead_of_misrouting(fake, client, photos):
    w = Watcher(client, [WatchSpec("w", photos, include_subfolders=True)])
    sub = fake.add_folder("Sub", photos)
    fake.add_file("s.jpg", sub, content=b"s")
    w.cache.clear()
    fake.fail_next("files.get", 403, "insufficientPermissions", message="insufficient scopes")
    with pytest.raises(Exception) as err:
        w.poll()
    assert getattr(err.value, "code", None) == "auth"
    w.poll()
    assert w.posted["w"] == ["s.jpg"]

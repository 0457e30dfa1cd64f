"""Post and target states. The pipeline moves a post forward one committed state at a time."""

# Post
DETECTED = "detected"      # a new file was seen; nothing fetched yet
DOWNLOADED = "downloaded"  # image fetched, validated and prepared (JPEG, oriented, metadata stripped)
CAPTIONED = "captioned"    # captions written for every target
AWAITING_REVIEW = "awaiting_review"  # captioned; waits for the owner's approval (watch.approval = review)
PUBLISHING = "publishing"  # targets are being published (see post_target rows)
PUBLISHED = "published"    # every target published
PARTIAL = "partial"        # some targets published, others failed
FAILED = "failed"          # no target published; last_error says why
SKIPPED = "skipped"        # waited longer than the watch's maximum_age
REJECTED = "rejected"      # the owner rejected it in review
EXPIRED = "expired"        # nobody reviewed it within the watch's review_ttl_hours

POST_ACTIVE = (DETECTED, DOWNLOADED, CAPTIONED, AWAITING_REVIEW, PUBLISHING)
POST_TERMINAL = (PUBLISHED, PARTIAL, FAILED, SKIPPED, REJECTED, EXPIRED)
POST_STATES = POST_ACTIVE + POST_TERMINAL

# Target
T_PENDING = "pending"
T_PUBLISHING = "publishing"  # committed before the platform call: on resume, reconcile, never re-send blindly
T_PUBLISHED = "published"
T_FAILED = "failed"
T_SKIPPED = "skipped"
TARGET_TERMINAL = (T_PUBLISHED, T_FAILED, T_SKIPPED)

# Source file
SF_SETTLING = "settling"  # seen, still being written; counted once its size is stable
SF_QUEUED = "queued"      # became a post
SF_BASELINE = "baseline"  # was there when the watch started; not posted (backfill = false)
SF_SKIPPED = "skipped"    # too old (maximum_age) or otherwise not posted; reason says why

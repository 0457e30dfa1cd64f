"""Service functions: the one implementation of every operation; the CLI and the API are thin shells.

They take a Session, check ownership where a user is acting, and raise :class:`ServiceError`
subclasses that both shells map to their own error shapes (exit codes, HTTP statuses).
"""


class ServiceError(Exception):
    code = "invalid"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(ServiceError):
    code = "not_found"


class Conflict(ServiceError):
    code = "conflict"


class Invalid(ServiceError):
    code = "invalid"


class Unavailable(ServiceError):
    """An external service could not be reached or asked us to wait: nothing was changed; try again."""

    code = "unavailable"


def get_owned(s, model, row_id: int, user, what: str):
    """The row, or NotFound if it does not exist or (with ``user``) belongs to someone else: another user's
    resource is indistinguishable from a missing one. ``user=None`` is the admin/CLI view."""
    row = s.get(model, row_id)
    if row is None or (user is not None and row.user_id != user.id):
        raise NotFound(f"no {what} {row_id}")
    return row

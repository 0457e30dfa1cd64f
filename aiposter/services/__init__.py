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

"""The ferry error tree.

Every failure ferry reports is one of these classes. Retry policy reads the
class, never the message text::

    FerryError
     ├── ConfigError                 bad input: transfer list, job spec, options
     ├── PluginError                 a plugin failed to load or misbehaved
     │    └── PluginUnavailable      its library is missing (says what to install)
     └── TransferError               one operation on one URL failed
          ├── TransientError         worth retrying (same or another replica)
          │    ├── ConnectError      could not reach the server
          │    ├── TransferTimeout   the server stopped answering
          │    ├── ThrottledError    429/503; carries retry_after seconds
          │    └── IncompleteTransfer the body ended early, or the source changed size
          └── PermanentError         retrying the same URL will not help
               ├── NotFound          404, ENOENT
               ├── PermissionDenied  403, EACCES, EROFS
               ├── AuthError         401, bad or missing credentials
               ├── IntegrityError    sha256 mismatch (expected, actual)
               └── UnsupportedScheme no plugin serves the URL's scheme

Each plugin maps its library's exceptions once, in a ``map_<lib>_exceptions``
context manager, and chains the original with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "ConnectError",
    "FerryError",
    "IncompleteTransfer",
    "IntegrityError",
    "NotFound",
    "PermanentError",
    "PermissionDenied",
    "PluginError",
    "PluginUnavailable",
    "ThrottledError",
    "TransferError",
    "TransferTimeout",
    "TransientError",
    "UnsupportedScheme",
]


class FerryError(Exception):
    """Base of every error ferry raises on purpose."""


class ConfigError(FerryError):
    """Bad input: a malformed transfer list, job spec, option or credentials file."""


class PluginError(FerryError):
    """A plugin could not be loaded or broke its contract."""

    def __init__(self, message: str, *, plugin: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin


class PluginUnavailable(PluginError):
    """The plugin's library is not installed; the message says what to install."""


class TransferError(FerryError):
    """One operation on one URL failed.

    ``url`` is always the redacted form, so the error can be logged and
    recorded as it is.
    """

    transient: bool = False
    #: the server's status code (HTTP) when the failure is its answer, else None
    status: int | None = None

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        plugin: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.url = url
        self.plugin = plugin

    def __str__(self) -> str:
        return self.message


class TransientError(TransferError):
    """Worth another try, after a pause or on another replica."""

    transient = True


class ConnectError(TransientError):
    """The server could not be reached."""


class TransferTimeout(TransientError):
    """The server stopped answering."""


class ThrottledError(TransientError):
    """The server asked us to slow down (HTTP 429/503, S3 SlowDown)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class IncompleteTransfer(TransientError):
    """Fewer (or more) bytes arrived than announced, or the source changed while read."""


class PermanentError(TransferError):
    """Retrying the same URL will not help; another replica may."""


class NotFound(PermanentError):
    """The object does not exist."""


class PermissionDenied(PermanentError):
    """The object exists but may not be read or written."""


class AuthError(PermanentError):
    """Credentials are missing, wrong or expired."""


class IntegrityError(PermanentError):
    """The bytes do not have the sha256 they should have."""

    def __init__(self, message: str, *, expected: str, actual: str, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.expected = expected
        self.actual = actual


class UnsupportedScheme(PermanentError):
    """No loaded plugin serves this URL scheme (or this operation on it)."""

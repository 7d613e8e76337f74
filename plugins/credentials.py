"""The credentials file: one INI file, sections per site and per endpoint.

In the spirit of Pegasus's ``credentials.conf`` (docs/credentials.md)::

    [osn]                       # an S3 site, as in s3://alice@osn/bucket/key
    endpoint = https://osn.example.org
    region = us-east-1
    addressing_style = path

    [alice@osn]                 # the keys of user alice at that site
    access_key = AKIA...
    secret_key = ...

    [data.example.org]          # an HTTP/WebDAV host (optionally host:port)
    username = alice
    password = ...
    header.X-Token = ...

    [sftp://login.example.org]  # a scheme-qualified section wins over a bare host
    key = ~/.ssh/id_ed25519
    host_key_policy = reject

The file is found at ``--credentials``/``$FERRY_CREDENTIALS``, else
``$PEGASUS_CREDENTIALS``, else ``~/.ferry/credentials.conf`` or
``~/.pegasus/credentials.conf`` when they exist. When none is found, each
library's own sources (AWS variables and profiles, ``~/.ssh``, ...) are used.
A file readable or writable by group or others is refused.

Values come back as :class:`Secret` where the key names a secret, so that an
accidental ``print``/``repr``/log shows ``***``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping

from .errors import ConfigError
from .url import URL

__all__ = ["Credentials", "Secret", "find_credentials_file", "load_credentials"]

SECRET_KEYS = (
    "password",
    "secret",
    "secret_key",
    "secret_access_key",
    "token",
    "session_token",
    "passphrase",
)


class Secret(str):
    """A string that does not show itself: ``str()``/``repr()``/format give ``***``.

    Use :meth:`reveal` where the real value must go (a request header, a
    library call).
    """

    def __str__(self) -> str:
        return "***"

    def __repr__(self) -> str:
        return "Secret('***')"

    def __format__(self, spec: str) -> str:
        return "***"

    def reveal(self) -> str:
        return str.__str__(self)


def _is_secret(key: str) -> bool:
    key = key.lower()
    return key.startswith("header.") or any(key == s or key.endswith("_" + s) for s in SECRET_KEYS)


def find_credentials_file(explicit: str | None = None) -> str | None:
    """The credentials file to use, or None."""
    for candidate in (
        explicit,
        os.environ.get("FERRY_CREDENTIALS"),
        os.environ.get("PEGASUS_CREDENTIALS"),
    ):
        if candidate:
            return os.path.expanduser(candidate)
    for default in ("~/.ferry/credentials.conf", "~/.pegasus/credentials.conf"):
        path = os.path.expanduser(default)
        if os.path.exists(path):
            return path
    return None


class Credentials(Mapping[str, Mapping[str, str]]):
    """Sections of the credentials file, looked up by URL."""

    def __init__(self, sections: dict[str, dict[str, str]], path: str | None = None) -> None:
        self._sections = sections
        self.path = path

    def __getitem__(self, name: str) -> Mapping[str, str]:
        return self._sections[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._sections)

    def __len__(self) -> int:
        return len(self._sections)

    def __repr__(self) -> str:
        return f"Credentials(path={self.path!r}, sections={sorted(self._sections)})"

    def candidates(self, url: URL) -> list[str]:
        """Section names that may apply to ``url``, most specific first."""
        host = url.host
        hostport = url.netloc
        user = f"{url.user}@" if url.user else ""
        names = [
            f"{url.scheme}://{user}{hostport}",
            f"{url.scheme}://{hostport}",
            f"{url.scheme}://{host}",
        ]
        if url.user:
            names += [f"{url.user}@{hostport}", f"{url.user}@{host}"]
        names += [hostport, host]
        seen: list[str] = []
        for n in names:
            if n and n not in seen:
                seen.append(n)
        return seen

    def for_url(self, url: URL) -> dict[str, str]:
        """Settings for ``url``: every matching section merged, most specific wins."""
        merged: dict[str, str] = {}
        for name in reversed(self.candidates(url)):
            merged.update(self._sections.get(name, {}))
        return merged

    def section(self, name: str) -> dict[str, str]:
        return dict(self._sections.get(name, {}))


def load_credentials(path: str | None = None) -> Credentials:
    """Read the credentials file (see the module doc); an empty set when there is none."""
    path = find_credentials_file(path)
    if path is None:
        return Credentials({})
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"credentials file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"credentials file {path} is accessible by group or others"
            f" (mode {stat.S_IMODE(st.st_mode):o}); run: chmod 600 {path}"
        )
    import configparser  # here, not at the top: most processes never read the file

    parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep header case
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except configparser.Error as exc:
        # configparser messages quote lines, which may hold secrets: keep the position only
        lineno = getattr(exc, "lineno", None)
        if lineno is None and getattr(exc, "errors", None):  # ParsingError: (lineno, line)s
            lineno = exc.errors[0][0]  # type: ignore[attr-defined]
        where = f" line {lineno}" if lineno is not None else ""
        raise ConfigError(
            f"credentials file {path}:{where} not a valid INI file ({type(exc).__name__})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"credentials file {path}: {exc.strerror}") from None
    sections: dict[str, dict[str, str]] = {}
    for name in parser.sections():
        values: dict[str, str] = {}
        for key, value in parser.items(name):
            values[key] = Secret(value) if _is_secret(key) else value
        sections[name] = values
    return Credentials(sections, path)

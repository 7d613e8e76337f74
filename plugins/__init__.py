"""ferry.

msgspec (imported by nearly every module here) tries ``typing_extensions`` at
import time for type-hint helpers that the ``typing`` module of Python 3.10+
also has, and falls back to ``typing`` when it is missing. Where
``typing_extensions`` is installed (httpx's anyio pulls it in) that import costs
~15 ms, with ``inspect`` behind it, on every ``ferry`` command and every job a
node starts. So msgspec is imported here, first, with ``typing_extensions``
hidden, unless something has imported it already; it is importable again right
after, for whoever needs it.
"""

import sys as _sys

if "msgspec" not in _sys.modules and "typing_extensions" not in _sys.modules:
    _sys.modules["typing_extensions"] = None  # type: ignore[assignment]
    try:
        import msgspec as _msgspec  # noqa: F401
    finally:
        del _sys.modules["typing_extensions"]

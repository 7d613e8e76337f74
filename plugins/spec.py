"""The plugin interface: everything a protocol plugin imports from ferry.

A plugin is a module (or class instance) with hook implementations, registered
under the ``ferry`` entry-point group::

    # pyproject.toml of the plugin's distribution
    [project.entry-points.ferry]
    myproto = "ferry_myproto.plugin"

    # ferry_myproto/plugin.py
    from ferry.plugins.spec import Capability, ProtocolInfo, hookimpl

    @hookimpl
    def ferry_protocols():
        return [ProtocolInfo(
            name="myproto", schemes=("myproto",),
            capabilities=frozenset({Capability.GET, Capability.STAT}),
            implementation="ferry_myproto.client:MyProtocol",
            requires=("myproto_sdk",))]

The hook must not import the client library: ``ferry plugins`` and the
worker's start-up call it for every plugin. See docs/plugins.md.
"""

from __future__ import annotations

import pluggy

from .credentials import Credentials, Secret
from .errors import (
    AuthError,
    ConfigError,
    ConnectError,
    FerryError,
    IncompleteTransfer,
    IntegrityError,
    NotFound,
    PermanentError,
    PermissionDenied,
    PluginError,
    PluginUnavailable,
    ThrottledError,
    TransferError,
    TransferTimeout,
    TransientError,
    UnsupportedScheme,
)
from .protocol import (
    Capability,
    Protocol,
    ProtocolContext,
    ProtocolInfo,
    Sink,
    Source,
    Stat,
    current_site,
    format_sha256,
    site_variable,
)
from .registry import API_VERSION, PROJECT
from .url import URL, parse_url, redact

# API_VERSION is bumped on a breaking change of the hooks or of Protocol; ferry
# warns a minor release before it breaks a plugin. It and PROJECT live in
# .registry, which must not import pluggy.
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class FerrySpec:
    """Hook specifications. The docstring of each hook is its contract."""

    @hookspec
    def ferry_protocols(self) -> list[ProtocolInfo]:  # type: ignore[empty-body]
        """Declare the protocols this plugin provides.

        :return: a list of :class:`ProtocolInfo`. Must be cheap: no client
            library may be imported here.
        """

    @hookspec
    def ferry_runtimes(self) -> list[object]:  # type: ignore[empty-body]
        """Declare container runtimes (see :mod:`ferry.containers.runtimes`).

        :return: a list of ``ferry.containers.runtimes.Runtime`` subclasses (classes,
            not instances). Must be cheap: probe for binaries later, not here.
        """


__all__ = [
    "API_VERSION",
    "URL",
    "AuthError",
    "Capability",
    "ConfigError",
    "ConnectError",
    "Credentials",
    "FerryError",
    "FerrySpec",
    "IncompleteTransfer",
    "IntegrityError",
    "NotFound",
    "PermanentError",
    "PermissionDenied",
    "PluginError",
    "PluginUnavailable",
    "Protocol",
    "ProtocolContext",
    "ProtocolInfo",
    "Secret",
    "Sink",
    "Source",
    "Stat",
    "ThrottledError",
    "TransferError",
    "TransferTimeout",
    "TransientError",
    "UnsupportedScheme",
    "current_site",
    "format_sha256",
    "hookimpl",
    "hookspec",
    "parse_url",
    "redact",
    "site_variable",
]

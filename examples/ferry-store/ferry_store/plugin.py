"""The hook ferry calls at start-up. Keep it cheap: declare, don't import clients."""

from __future__ import annotations

from ferry.plugins.spec import Capability, ProtocolInfo, hookimpl


@hookimpl
def ferry_protocols() -> list[ProtocolInfo]:
    return [
        ProtocolInfo(
            name="store",
            schemes=("store",),
            capabilities=frozenset(
                {
                    Capability.GET,
                    Capability.PUT,
                    Capability.STAT,
                    Capability.MKDIR,
                    Capability.REMOVE,
                    Capability.CHECKSUM,
                }
            ),
            implementation="ferry_store.protocol:StoreProtocol",
            description="objects in a named local directory, with sha256 sidecars",
        )
    ]

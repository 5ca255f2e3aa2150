"""permessage-deflate (RFC 7692) for the listeners with ``compress = true``.

What a charge point sends compressed is bounded after inflation, not before: Autobahn (26.x)
inflates each frame with zlib's ``max_length`` set to what is left of ``maxMessagePayloadSize``
for the message, and fails the connection as soon as there is more (it never inflates a whole
frame first). The accept below also sets the extension's own ``max_message_size`` to the same
bound, so the cap holds even if Autobahn's protocol-level check changes. A deflate bomb thus costs
at most ``max_frame_size`` bytes of output before the connection is closed with 1009.

Cost: zlib keeps a 32 KB inflate window per compressing charge point, and a deflate state
(about 256 KB with zlib's defaults, created on the first message the gateway sends) per connection
that gateway-to-charge-point messages are compressed on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept


def deflate_accept(max_message_size: int) -> Callable[[Sequence[Any]], PerMessageDeflateOfferAccept | None]:
    """Autobahn's ``perMessageCompressionAccept``: the charge point's first permessage-deflate offer."""

    def accept(offers: Sequence[Any]) -> PerMessageDeflateOfferAccept | None:
        for offer in offers:
            if isinstance(offer, PerMessageDeflateOffer):
                return PerMessageDeflateOfferAccept(offer, max_message_size=max_message_size)
        return None

    return accept


def refuse_compression(offers: Sequence[Any]) -> None:
    """Autobahn's ``perMessageCompressionAccept`` when ``compress = false``: every offer declined."""
    return None

"""X-Forwarded-For as the services should see it: the caller's address, found by the gateway, in
place of whatever the caller wrote there (believed only from a trusted proxy in front of the
gateway, RLHF_TRUSTED_PROXIES). The services limit failed authentications by that address, and
believe the header only from the gateway, so no client can choose the address it is counted as."""

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.auth import client_address, trusted_networks

HEADER = b"x-forwarded-for"


class ForwardedForMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app
        self.trusted = trusted_networks()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            peer = scope["client"][0] if scope.get("client") else None
            written = ", ".join(v.decode("latin-1") for k, v in scope["headers"] if k == HEADER)
            address = client_address(peer, written, self.trusted).encode("ascii", "replace")
            headers = [(k, v) for k, v in scope["headers"] if k != HEADER]
            scope = {**scope, "headers": [*headers, (HEADER, address)]}
        await self.app(scope, receive, send)

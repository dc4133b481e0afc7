"""HTTP: health, readiness, Prometheus metrics, and the API (alerts, explanations, reload).

Health, readiness and metrics are open; everything under /api needs the bearer token when
`http.token` is set.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from daemon.config import HttpSettings
from daemon.metrics import Metrics

if TYPE_CHECKING:
    from daemon.actions import ActionService
    from daemon.core.twin import Twins
    from daemon.rules import RuleService

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpApi:
    def __init__(
        self,
        settings: HttpSettings,
        metrics: Metrics,
        readiness: Callable[[], dict[str, bool]],
        rules: RuleService | None = None,
        actions: ActionService | None = None,
        twins: Twins | None = None,
        default_timeout_s: float = 600.0,
        problems: Callable[[], dict[str, str]] = dict,
        warnings: Callable[[], dict[str, str]] = dict,
    ) -> None:
        self._settings = settings
        self._problems = problems
        self._warnings = warnings
        self._metrics = metrics
        self._readiness = readiness
        self._rules = rules
        self._actions = actions
        self._twins = twins
        self._timeout_s = default_timeout_s
        self.bound_port: int | None = None
        self._runner: web.AppRunner | None = None

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024, middlewares=[self._auth])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/api/v1/alerts", self._alerts)
        app.router.add_post("/api/v1/rules/reload", self._reload)
        app.router.add_get("/api/v1/devices/{device}", self._device)
        app.router.add_post("/api/v1/rules/groups/{group}/evaluate", self._evaluate_group)
        app.router.add_get("/api/v1/tickets", self._tickets)
        app.router.add_post("/api/v1/tickets/{ticket}/{action}", self._ticket_action)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = self._settings.token
        if token is not None and request.path.startswith("/api/"):
            expected = f"Bearer {token.get_secret_value()}"
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        return await handler(request)

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        checks = self._readiness()
        ready = all(checks.values())
        return web.json_response(
            {
                "status": "ready" if ready else "not ready",
                "checks": checks,
                "problems": self._problems(),
                "warnings": self._warnings(),
            },
            status=200 if ready else 503,
        )

    async def _metrics_page(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def _alerts(self, _request: web.Request) -> web.Response:
        if self._rules is None:
            return web.json_response([])
        states = sorted(self._rules.states.values(), key=lambda s: s.key)
        return web.json_response([s.to_dict() for s in states])

    async def _reload(self, _request: web.Request) -> web.Response:
        if self._rules is None:
            return web.json_response({"ok": False, "problems": ["no rule engine"]}, status=503)
        result = await self._rules.reload("HTTP request")
        return web.json_response(result.to_dict(), status=200 if result.ok else 422)

    async def _evaluate_group(self, request: web.Request) -> web.Response:
        """Evaluate a scheduled (usage) group now instead of at its next cron time."""
        if self._rules is None:
            return web.json_response({"error": "no rule engine"}, status=503)
        try:
            transitions = await self._rules.evaluate_scheduled(request.match_info["group"])
        except KeyError:
            return web.json_response({"error": "no such group"}, status=404)
        return web.json_response({"transitions": [t.to_dict() for t in transitions]})

    async def _device(self, request: web.Request) -> web.Response:
        """The live state of one device (the link every ticket carries)."""
        twin = self._twins.get(request.match_info["device"]) if self._twins else None
        if twin is None:
            return web.json_response({"error": "unknown device"}, status=404)
        data = twin.to_dict()
        data["online"] = twin.online(time.time_ns() // 1_000_000, self._timeout_s)
        if self._rules is not None:
            data["alerts"] = [
                s.to_dict() for s in self._rules.states.values() if s.device == twin.id
            ]
        return web.json_response(data)

    async def _tickets(self, _request: web.Request) -> web.Response:
        if self._actions is None:
            return web.json_response([])
        return web.json_response([t.to_dict() for t in self._actions.tickets.values()])

    async def _ticket_action(self, request: web.Request) -> web.Response:
        if self._actions is None:
            return web.json_response({"error": "actions are disabled"}, status=503)
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return web.json_response({"error": "body must be JSON"}, status=400)
        who = str(body.get("by") or "agent")
        arg = str(body.get("text") or body.get("agent") or body.get("reason") or "")
        try:
            ticket = await self._actions.ticket_action(
                request.match_info["ticket"], request.match_info["action"], who, arg
            )
        except KeyError:
            return web.json_response({"error": "no such open ticket"}, status=404)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(ticket.to_dict())

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._settings.host, self._settings.port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port (port 0) only here
        if server is not None and getattr(server, "sockets", None):
            self.bound_port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        log.info("http on http://%s:%s", self._settings.host, self.bound_port)

    async def run(self) -> None:
        """Serve until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

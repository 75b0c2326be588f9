"""The HTTP faces on PORT_ZEPH, one module each; a module exports ``routes()``.

- ``ws``: JSON-RPC 2.0 on ``/ws`` (the web service's own);
- ``legacy_ws``: the 2015 client's wire format on LEGACY_WS_PATH (the web service's);
- ``launcher``: the ParaViewWeb/wslink launcher REST API (the job manager's);
- ``agent``: the smartmob-agent REST API under ``/agent/`` (the agent's);
- ``rest``: what the JSON REST faces share (authentication, bodies, errors).

A service lists its routes in ``http_routes()``; the web service
(``service.websocket_client``) serves them all, and Django behind them.
"""

"""The supplier's own HTTP service: redemption for its redeemers (``cardproof issuer serve``).

It holds the supplier's secrets (the master key, the batch secrets through it, the redeemers' API keys)
and therefore runs on the supplier's side, never on the public verification service (``docs/two-sides.md``).

* ``app``       – ``create_app()``: the FastAPI application; its parts are built in the lifespan.
* ``auth``      – API keys (stored hashed) and EIP-191 signed requests with single-use nonces.
* ``routes``    – ``POST /v1/cards/{serial}/redeem``, ``GET /healthz``, ``GET /readyz``.
* ``errors``    – JSON errors with a stable ``code``.
* ``schemas``   – request and answer models (validation and OpenAPI).
* ``ratelimit`` – GCRA rate limits and nonces, in memory or in Redis.
* ``erp``       – the supplier's ERP API (``/v1/erp/*``: stock, mint jobs, orders, revocations, webhook
  deliveries), for ERP API keys; ``erp_schemas`` its models. Background work in the lifespan: webhook deliveries
  (``issuer.webhooks``) and mint jobs (``issuer.mint_jobs``); idempotency keys: ``issuer.idempotency``.
"""

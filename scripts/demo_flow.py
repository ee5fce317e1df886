"""The demo behind scripts/demo: cardproof's two sides end to end, on embedded defaults.

The supplier's side (`issuer/`, its database `cardproof.db`: master key, batch secrets, encrypted codes) and the
public side (`verify_api/`, its own database `public.db`: leaves and trees, no secret) meet only on the chain
and in the published batch dump (docs/two-sides.md).

1. start the local chain (anvil; `--once`: the in-process chain)
2. deploy the registry, a test stablecoin and the escrow
3. add a demo issuer (its name recorded on chain)
4. the supplier mints a batch
5. the supplier anchors it
6. the public service starts (`cardproof serve`; `--once`: the same app on a loopback thread) and the supplier
   publishes the batch's dump to it (`cardproof publish`), which checks it against the chain
7. the supplier exports its codes, openings and QR codes
8. a buyer orders cards of the batch's product (SKU, face value, currency, fixed on chain) in stablecoin
9. the supplier's node (no command typed) picks cards from stock, seals them to the buyer's key, delivers on chain
   with the sealed hash and publishes the sealed delivery
10. the buyer fetches the sealed delivery, checks it against the chain, opens it, checks every card, confirms
11. the supplier withdraws
12. serve: the public API on 127.0.0.1:PORT and the supplier's redemption service (`cardproof issuer serve`)
   on 127.0.0.1:PORT+100, and print card URLs (`--once`: check every step instead and exit 0: an exported QR
   image decodes to the public URL, the public side answers authentic, the holder's code and opening open the
   served leaf, the supplier's redemption service redeems a card typed in lower case without dashes, the
   public side then says redeemed)

Before it starts anything it checks that its ports (PORT and PORT+100) are free: a busy one ends it at once with a
hint to pick another with --port. Whatever it started (the local chain, unless one was already running for this
home, both services, the supplier's node) it stops on every way out: the end of --once, Ctrl-C, SIGTERM or SIGHUP,
an error. `--once` runs in an environment of its own (no CARDPROOF_* variable of the caller reaches it) and removes
its temporary folder, which holds plaintext codes, on every way out too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEMO_SKU = "DEMO-GAME-100"
DEMO_FACE_VALUE = "10.00"
DEMO_CURRENCY = "USD"
DEMO_CARDS = 12
ORDER_CARDS = 5
UNIT_PRICE = 9_500_000  # 9.50 in the 6-decimal test stablecoin
DEMO_FEE_BPS = 50  # 0.5 %


def step(n: int, text: str) -> None:
    print(f"{n}. {text}", flush=True)


class DemoFailure(Exception):
    pass


class PortBusy(Exception):
    """A port the demo would serve on is taken (the message says which, and how to pick another)."""


class Stopped(BaseException):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so that everything started is stopped."""


def _stop_on_signal(signum: int, _frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def check(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailure(what)
    print(f"   ok: {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:``port`` now (as uvicorn binds: with SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def check_ports(port: int) -> None:
    """Raise :class:`PortBusy` unless the public API's ``port`` and the redemption service's ``port + 100`` are
    free, naming a --port that would do."""
    if not 0 < port <= 65_435:
        raise PortBusy(f"--port {port} is out of range (1..65435; the redemption service takes port + 100)")
    busy = [p for p in (port, port + 100) if not port_is_free(p)]
    if not busy:
        return
    other = next((p for p in range(port + 1, min(port + 100, 65_436)) if port_is_free(p) and port_is_free(p + 100)),
                 None)
    hint = f"scripts/demo --port {other}" if other else "scripts/demo --port PORT"
    raise PortBusy(f"port {busy[0]} on 127.0.0.1 is in use (the demo serves on --port {port} and {port + 100}); "
                   f"pick another with --port, e.g. {hint}")


def use_clean_environment(home: Path, port: int) -> None:
    """--once: no CARDPROOF_* setting of the caller's (a private key, a database, a Redis, a node config, ...)
    reaches the demo; it runs on these alone. Settings names are case-insensitive, so is the sweep."""
    for name in [n for n in os.environ if n.upper().startswith("CARDPROOF_")]:
        del os.environ[name]
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    os.environ.update(CARDPROOF_HOME=str(home), CARDPROOF_RPC_URL="eth-tester",
                      CARDPROOF_MASTER_KEY=secrets.token_hex(32), CARDPROOF_PUBLIC_URL=f"http://127.0.0.1:{port}")


def stop_server(server) -> None:  # noqa: ANN001 - a ThreadServer or a subprocess.Popen
    """Stop a server the demo started (a thread, or a process: SIGTERM, then SIGKILL after 10 s)."""
    import subprocess

    if isinstance(server, ThreadServer):
        server.stop()
        return
    if server.poll() is None:
        server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


class ThreadServer:
    """A uvicorn server for ``app`` on a loopback thread (the --once demo's public service)."""

    def __init__(self, app, port: int) -> None:  # noqa: ANN001
        import threading

        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    lifespan="on", access_log=False))
        self.thread = threading.Thread(target=self.server.run, name="demo-public-service", daemon=True)

    def start(self) -> None:
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise DemoFailure("the public service did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_process(argv: list[str], env: dict[str, str], health_url: str, what: str):  # noqa: ANN201
    """Start a `cardproof ...` server process and wait until ``health_url`` answers."""
    import subprocess
    import time

    import httpx

    proc = subprocess.Popen(argv, env=env)
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(health_url, timeout=1).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise DemoFailure(f"{what} did not start ({' '.join(argv[1:])})")
            time.sleep(0.2)
    except BaseException:  # not started, or interrupted while starting: never left running
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def run(once: bool, port: int) -> int:
    """The demo; everything it starts is stopped, and --once's folder removed, when it returns or raises."""
    with contextlib.ExitStack() as started:
        if once:
            home = Path(tempfile.mkdtemp(prefix="cardproof-demo-"))
            started.callback(shutil.rmtree, home, ignore_errors=True)  # it holds plaintext codes
            port = free_port()
            use_clean_environment(home, port)
        else:
            check_ports(port)
            os.environ.setdefault("CARDPROOF_HOME", str(REPO / ".cardproof"))
            os.environ.setdefault("CARDPROOF_PUBLIC_URL", f"http://127.0.0.1:{port}")
        return _run(once, port, started)


def _run(once: bool, port: int, started: contextlib.ExitStack) -> int:
    """Steps 1-12; each thing started is pushed on ``started``, which stops it."""
    from chain import local_node
    from chain.client import connect
    from chain.escrow import Escrow, faucet
    from chain.client import dev_accounts
    from chain.platform import deploy_platform
    from chain.registry import Registry
    from chain.settings import get_settings
    from issuer.anchoring import anchor_batch
    from issuer.export import export_batch
    from issuer.issuers import add_issuer
    from issuer.minting import MintRequest, mint_batch
    from issuer.publishing import publish_batch
    from issuer.runtime import Runtime

    settings = get_settings()
    if once:
        step(1, "in-process chain (py-evm)")
    elif not settings.rpc_url:
        if local_node.recorded(settings.home) is None:  # ours to stop; a chain already up (`chain up`) is left
            started.callback(local_node.stop, settings.home)
        node = local_node.start(settings.home)
        step(1, f"local chain at {node.url} (state in {node.state_path})")
    else:
        step(1, f"chain at {settings.rpc_url}")

    admin = connect(settings)
    platform = deploy_platform(admin, settings.home)
    step(2, f"CardRegistry {platform.registry.address}, CardEscrow {platform.escrow.address}, "
            f"test stablecoin {platform.stablecoin.address} (chain {admin.chain_id})")

    _, issuer_acct, buyer_acct, *_ = dev_accounts(admin.w3, admin.chain_id, 4)
    issuer = admin.with_account(issuer_acct)
    buyer = admin.with_account(buyer_acct)
    rt = Runtime(settings)
    registry_admin = Registry(admin, platform.registry.address)
    added = add_issuer(rt.sessions, registry_admin, issuer.address, "Demo Games Ltd")
    step(3, f"issuer {added['name']!r} {issuer.address}")

    minted = mint_batch(rt.sessions, rt.master_key, issuer.address,
                        MintRequest(sku=DEMO_SKU, face_value=DEMO_FACE_VALUE, currency=DEMO_CURRENCY, count=DEMO_CARDS))
    step(4, f"minted batch {minted.batch_id}: {minted.count} x {DEMO_SKU} {DEMO_FACE_VALUE} {DEMO_CURRENCY}")

    registry = Registry(issuer, platform.registry.address)
    anchored = anchor_batch(rt.sessions, registry, minted.batch_id)
    step(5, f"anchored root {anchored.root} in block {anchored.anchor_block} (tx {anchored.anchor_tx})")

    api = f"http://127.0.0.1:{port}"
    servers: list = []  # the server processes (not --once), watched while the demo serves
    if once:
        from verify_api.app import create_app

        public = ThreadServer(create_app(settings), port)
        started.callback(stop_server, public)
        public.start()
        where = f"in-process public service at {api}"
    else:
        from verify_api.cli import secret_env_names

        env = {k: v for k, v in os.environ.items() if k not in secret_env_names()}  # it holds no secret
        servers.append(start_process([str(REPO / ".venv" / "bin" / "cardproof"), "serve", "--port", str(port)], env,
                                     f"{api}/healthz", "the public service"))
        started.callback(stop_server, servers[-1])
        where = f"public service (cardproof serve) at {api}"
    published = publish_batch(rt.sessions, minted.batch_id, api)
    step(6, f"published the batch's dump to the {where}: {published['cards']} cards, root checked on chain "
            f"({'stored' if published['stored'] else 'already there'}; "
            f"database {settings.effective_public_database_url})")

    out = settings.home / "demo" / f"export-{minted.batch_id[2:14]}"
    exported = export_batch(rt.sessions, rt.master_key, minted.batch_id, out, settings.public_url, force=True)
    step(7, f"exported {exported.cards} cards: {exported.cards_csv} (serial, index, code, opening, url), "
            f"QR codes in {exported.qr_dir}")
    return _settle_and_finish(once, port, settings, rt, admin, platform, issuer, buyer, minted, exported, started,
                              servers)


def _settle_and_finish(once, port, settings, rt, admin, platform, issuer, buyer, minted, exported,  # noqa: ANN001
                       started, servers) -> int:
    from chain.escrow import Escrow, faucet
    from chain.registry import Registry
    import time
    from types import SimpleNamespace

    import httpx

    from issuer.node.config import NodeConfig
    from issuer.node.runner import SupplierNode
    from verify_api.order_receive import receive

    coin = platform.stablecoin.address
    escrow_admin = Escrow(admin, platform.escrow.address)
    if escrow_admin.rules().fee_bps == 0:
        escrow_admin.set_fee(DEMO_FEE_BPS)  # the platform's fee, public on chain and capped at 1 %
    faucet(admin, coin, buyer.address, 1_000 * 10**6)
    escrow_buyer = escrow_admin.as_account(buyer)
    escrow_issuer = escrow_admin.as_account(issuer)
    escrow_buyer.approve(coin, ORDER_CARDS * UNIT_PRICE)
    registry = Registry(issuer, platform.registry.address)
    # 8a. The buyer orders cards of the batch's product (SKU, face value, currency, fixed on chain at anchoring);
    # the codes will be sealed to the buyer's account key.
    product_id = registry.batch(bytes.fromhex(minted.batch_id[2:])).product_id
    now = int(admin.w3.eth.get_block("latest")["timestamp"])
    order_id = escrow_buyer.open_order(issuer.address, product_id, ORDER_CARDS, coin, UNIT_PRICE,
                                       now + 3 * 86_400, 86_400)
    step(8, f"the buyer {buyer.address} ordered {ORDER_CARDS} x {DEMO_SKU} {DEMO_FACE_VALUE} {DEMO_CURRENCY} "
            f"(product {product_id}) at 9.50 tUSD: order #{order_id}, {ORDER_CARDS * 9.5:.2f} tUSD held in escrow")
    # 8b. Nobody types a command for the supplier: its node sees the order, picks cards from stock, seals them to
    # the buyer's key, delivers on chain with the sealed hash and publishes the sealed delivery.
    node = SupplierNode(rt, escrow_issuer, registry,
                        NodeConfig(public_urls=(f"http://127.0.0.1:{port}",), poll_interval=0.2, low_stock=0))
    node.start()
    t0 = time.monotonic()
    try:
        published = False
        while time.monotonic() - t0 < 60 and not published:
            time.sleep(0.2)
            got = httpx.get(f"http://127.0.0.1:{port}/v1/orders/{order_id}/delivery", timeout=5)
            published = got.status_code == 200
    finally:
        node.stop()
    took = time.monotonic() - t0
    order = escrow_buyer.order(order_id)
    _, ranges = escrow_buyer.delivery(order_id)
    cards_text = ", ".join(f"{r.start}..{r.stop - 1}" for r in ranges)
    delivered = SimpleNamespace(cards=sum(r.length for r in ranges), sealed_hash=order.sealed_hash,
                                uploaded=published)
    where = "published on" if published else "NOT published on"
    step(9, f"the supplier's node filled order #{order_id} by itself in {took:.1f} s: {delivered.cards} cards of "
            f"its stock (cards {cards_text}) sealed to the buyer's key, sealed hash "
            f"0x{order.sealed_hash.hex()[:16]}... on chain, the sealed delivery {where} the public service")
    # 8c. The buyer fetches it, checks it against the chain, opens it and checks every card, then confirms.
    buyer_csv = settings.home / "demo" / f"buyer-cards-order-{order_id}.csv"
    buyer_csv.unlink(missing_ok=True)
    received = receive(escrow_buyer, Registry(buyer, platform.registry.address), order_id,
                       bytes(buyer.account.key), public_url=f"http://127.0.0.1:{port}", out=buyer_csv)
    passed = sum(c.ok for c in received.report.cards)
    settlement = escrow_buyer.confirm(order_id) if received.report.ok else None
    step(10, f"the buyer received the sealed delivery, {passed} of {len(received.report.cards)} cards pass every "
             f"check (in the anchored root, code opens its commitment, product, this order only, not revoked or "
             f"redeemed): {buyer_csv} (mode 0600); " + ("order confirmed" if settlement else "NOT confirmed"))
    if settlement is None:
        print("demo: the buyer's checks failed", file=sys.stderr)
        return 1
    # 8d. The supplier withdraws what settlement credited.
    paid = escrow_issuer.withdraw(coin)
    step(11, f"the supplier withdrew {paid / 10**6:.2f} tUSD (platform fee {settlement.fee / 10**6:.2f})")

    rows = read_cards_csv(exported.cards_csv)
    if once:
        trade = {"received": received, "buyer_csv": buyer_csv, "sealed_hash": delivered.sealed_hash,
                 "uploaded": delivered.uploaded, "api": f"http://127.0.0.1:{port}",
                 "indices": {i for r in ranges for i in range(r.start, r.stop)}}
        return self_check(settings, rt, registry, exported, rows, issuer.address, settlement, paid, order_id,
                          escrow_admin, trade)
    from issuer.service.auth import create_api_key

    redeem_port = port + 100
    env = dict(os.environ, CARDPROOF_PRIVATE_KEY="0x" + bytes(issuer.account.key).hex())
    redemption = start_process([str(REPO / ".venv" / "bin" / "cardproof"), "issuer", "serve", "--port",
                                str(redeem_port)], env, f"http://127.0.0.1:{redeem_port}/healthz",
                               "the redemption service")
    started.callback(stop_server, redemption)
    servers.append(redemption)
    with rt.sessions.begin() as session:
        key, _ = create_api_key(session, issuer.address, "demo till")
    step(12, f"serving the public API on http://127.0.0.1:{port} (cardproof serve) and the supplier's redemption "
            f"service on http://127.0.0.1:{redeem_port} (cardproof issuer serve) — open a card page:")
    for row in rows[:3]:
        print(f"   {row['url']}")
    print(f"   {settings.public_url}/v1/cards/{rows[0]['serial']}   (JSON with the proof)")
    print(f"   {settings.public_url}/v1/orders/{order_id}    (the order timeline)")
    print(f"   check a card with its code and opening: .venv/bin/cardproof verify {rows[0]['url']}")
    print(f"   redeem: curl -X POST -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' "
          f"-d '{{\"code\": \"{rows[-1]['code']}\"}}' "
          f"http://127.0.0.1:{redeem_port}/v1/cards/{rows[-1]['serial']}/redeem")
    print("   Ctrl-C stops everything the demo started (both services, and the chain if it started it).", flush=True)
    try:
        while all(p.poll() is None for p in servers):
            time.sleep(0.5)
    except (KeyboardInterrupt, Stopped):
        return 0
    gone = next(p for p in servers if p.poll() is not None)
    print(f"demo: a service exited by itself ({' '.join(gone.args[1:3])}, code {gone.returncode})", file=sys.stderr)
    return 1


def read_cards_csv(path) -> list[dict[str, str]]:  # noqa: ANN001
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def self_check(settings, rt, registry, exported, rows, issuer_address, settlement, paid, order_id,  # noqa: ANN001
               escrow, trade) -> int:
    import httpx
    from eth_utils import keccak
    import sqlalchemy as sa
    import zxingcpp
    from PIL import Image

    from issuer.core.commitment import opens, parse_opening
    from issuer.core.leaf import CardLeaf
    from issuer.service.app import ServiceDeps, create_app
    from issuer.service.auth import create_api_key

    step(12, "checking the results")
    first = rows[0]
    serial, code, opening = first["serial"], first["code"], first["opening"]
    check(list(first) == ["serial", "index", "code", "opening", "url"],
          "cards.csv holds serial, index, code, opening, url")
    png = Path(exported.qr_dir) / f"{serial}.png"
    decoded = zxingcpp.read_barcodes(Image.open(png))
    check(len(decoded) == 1, "the exported QR image decodes")
    url = decoded[0].text
    check(url == f"{settings.public_url}/c/{serial}", f"the QR holds the public card URL and nothing else ({url})")
    check(code not in url and opening not in url, "the QR holds neither the code nor the opening")

    # The public side: its own database, the published batch, no secret.
    page = httpx.get(url, headers={"Accept-Language": "en"}, timeout=30)
    check(page.status_code == 200 and "text/html" in page.headers["content-type"], f"GET {url} serves the card page")
    answer = httpx.get(f"{settings.public_url}/v1/cards/{serial}", timeout=30).json()
    check(answer["verdict"] == "authentic", f"the public service says the card is authentic ({answer['verdict']})")
    check(answer["issuer"]["address"] == issuer_address, "the public service names the issuer")
    check(all(r["code"] not in page.text + str(answer) and r["opening"] not in page.text + str(answer) for r in rows),
          "no code and no opening in the page or the API answer")
    unknown = httpx.get(f"{settings.public_url}/v1/cards/0000-0000-0000-0000-0", timeout=30).json()
    check(unknown["verdict"] == "unknown", "an unknown serial is reported unknown")
    zh = httpx.get(url, headers={"Accept-Language": "zh-CN,zh;q=0.9"}, timeout=30)
    check(zh.status_code == 200 and 'lang="zh-CN"' in zh.text, "the page speaks Chinese when asked")

    public_db = Path(settings.home) / "public.db"
    supplier_db = Path(settings.home) / "cardproof.db"
    check(public_db.is_file() and supplier_db.is_file(), f"two databases: {supplier_db.name} and {public_db.name}")
    for db, has, lacks in ((supplier_db, "cards", "pub_batches"), (public_db, "pub_batches", "cards")):
        eng = sa.create_engine(f"sqlite:///{db}")
        try:
            names = set(sa.inspect(eng).get_table_names())
            if db == public_db:
                with eng.connect() as conn:
                    n = conn.execute(sa.text("SELECT count(*) FROM pub_cards")).scalar()
                check(n == len(rows), f"the public database holds the {n} published cards")
        finally:
            eng.dispose()
        check(has in names and lacks not in names, f"{db.name} holds {has}, not {lacks}")
    raw = public_db.read_bytes() + b"".join(p.read_bytes() for p in public_db.parent.glob("public.db-*"))
    check(not any(r["code"].encode() in raw or r["code"].replace("-", "").encode() in raw
                  or parse_opening(r["opening"]) in raw for r in rows),
          "the public database holds no code and no opening")

    # The holder: code + opening open the leaf the public side served, with no key of anybody's.
    leaf = CardLeaf.from_json(answer["proof"]["value"])
    check(format_serial_of(leaf) == serial and str(leaf.index) == first["index"], "the served leaf is this card's")
    check(opens(code, parse_opening(opening), leaf.code_form, leaf.code_commitment),
          "the holder's code and opening open the served leaf's commitment")
    check(not opens(rows[1]["code"], parse_opening(opening), leaf.code_form, leaf.code_commitment)
          and not opens(code, parse_opening(rows[1]["opening"]), leaf.code_form, leaf.code_commitment),
          "another card's code or opening does not")

    # The supplier's side: redemption by a redeemer's API key on `cardproof issuer serve`'s app.
    target = rows[1]
    with rt.sessions.begin() as session:
        key, _ = create_api_key(session, issuer_address, "demo till")
    deps = ServiceDeps(settings=settings, sessions=rt.sessions, master_key=rt.master_key, registry=registry)
    auth = {"Authorization": f"Bearer {key}"}
    service = ThreadServer(create_app(settings, deps=deps), free_port())  # `cardproof issuer serve`'s app
    service.start()
    try:
        supplier = httpx.Client(base_url=f"http://127.0.0.1:{service.server.config.port}", timeout=30)
        path = f"/v1/cards/{target['serial']}/redeem"
        wrong = supplier.post(path, json={"code": rows[2]["code"]}, headers=auth)
        check(wrong.status_code == 403, f"a wrong code is refused ({wrong.status_code})")
        typed = target["code"].lower().replace("-", "")
        done = supplier.post(path, json={"code": typed}, headers=auth)
        check(done.status_code == 200 and done.json()["serial"] == target["serial"],
              f"the supplier's service redeems the code typed as {typed!r} (folded form)")
        again = supplier.post(path, json={"code": target["code"]}, headers=auth)
        check(again.status_code == 409, f"a second redemption is refused ({again.status_code})")
        anon = supplier.post(f"/v1/cards/{rows[2]['serial']}/redeem", json={"code": rows[2]["code"]})
        check(anon.status_code == 401, f"redemption needs a key or a signature ({anon.status_code})")
        supplier.close()
    finally:
        service.stop()
    check(registry.is_redeemed(bytes.fromhex(exported.batch_id[2:]), int(target["index"])), "the chain says redeemed")
    # The public side mirrors chain facts: it sees the redemption within its chain poll interval (2 s).
    import time

    deadline = time.monotonic() + 20
    while True:
        after = httpx.get(f"{settings.public_url}/v1/cards/{target['serial']}", timeout=30).json()
        if after["verdict"] == "redeemed" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    check(after["verdict"] == "redeemed", f"the public service, reading the chain, now says redeemed "
                                          f"({after['verdict']})")

    order = escrow.order(order_id)
    check(order.status.name in ("CONFIRMED", "RELEASED"), f"the order is settled ({order.status.name})")
    check(order.sealed_hash == trade["sealed_hash"], "the escrow recorded the sealed delivery's hash with the delivery")
    check(trade["uploaded"], "the public service took the sealed delivery (its hash matched the chain)")
    blob = httpx.get(f"{trade['api']}/v1/orders/{order_id}/delivery").content
    check(keccak(blob) == order.sealed_hash,
          "the sealed delivery served by the public service hashes to the chain's record")
    check(not any(r["code"].encode() in blob for r in rows), "the sealed delivery holds no code in plaintext")
    report = trade["received"].report
    check(report.ok and len(report.cards) == ORDER_CARDS, f"the buyer's checks pass for all {ORDER_CARDS} cards")
    buyer_rows = read_cards_csv(trade["buyer_csv"])
    check(oct(trade["buyer_csv"].stat().st_mode & 0o777) == "0o600", "the buyer's cards.csv has mode 0600")
    delivered_rows = [r for r in rows if int(r["index"]) in trade["indices"]]
    check({(r["serial"], r["code"]) for r in buyer_rows} == {(r["serial"], r["code"]) for r in delivered_rows},
          "the buyer's codes are the supplier's codes of the delivered cards")
    check(paid == settlement.supplier_amount and paid > 0, "the supplier withdrew what settlement credited")
    check(settlement.fee == ORDER_CARDS * UNIT_PRICE * DEMO_FEE_BPS // 10_000, "the platform fee is 0.5 %")
    print("demo: all checks passed")
    return 0


def format_serial_of(leaf) -> str:  # noqa: ANN001
    from issuer.core.serial import format_serial

    return format_serial(leaf.serial)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--once", action="store_true",
                        help="in-process chain and temporary database; check the results and exit")
    parser.add_argument("--port", type=int, default=8000,
                        help="the public API's port (default 8000); the redemption service takes port + 100")
    # scripts/demo runs this first, before its set-up: arguments and ports only, nothing started or imported.
    parser.add_argument("--preflight", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.preflight:
            if not args.once:
                check_ports(args.port)
            return 0
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _stop_on_signal)
        from chain.errors import CardproofError
        from issuer.core.errors import CoreError

        try:
            return run(args.once, args.port)
        except DemoFailure as exc:
            print(f"demo: check failed: {exc}", file=sys.stderr)
            return 1
        except (CardproofError, CoreError) as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 1
    except PortBusy as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Stopped):
        print("demo: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback (everything started is stopped by now)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"demo: failed: {type(exc).__name__}: {first}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The demo behind scripts/demo: cardproof's main job end to end, on embedded defaults.

1. start the local chain (anvil; `--once`: the in-process chain)
2. deploy the registry, a test stablecoin and the escrow
3. add a demo issuer
4. mint a batch
5. anchor it
6. export its codes and QR codes
7. a buyer orders cards in stablecoin, the supplier delivers, the buyer confirms, the supplier withdraws
8. serve the API on 127.0.0.1:8000 and print card URLs (`--once`: check the results instead and exit 0,
   including decoding an exported QR image with zxing-cpp and following its URL)
"""

from __future__ import annotations

import argparse
import os
import secrets
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


def check(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailure(what)
    print(f"   ok: {what}")


def run(once: bool, port: int) -> int:
    if once:
        home = Path(tempfile.mkdtemp(prefix="cardproof-demo-"))
        os.environ["CARDPROOF_HOME"] = str(home)
        os.environ["CARDPROOF_RPC_URL"] = "eth-tester"
        os.environ.pop("CARDPROOF_DATABASE_URL", None)
        os.environ["CARDPROOF_MASTER_KEY"] = secrets.token_hex(32)
    else:
        os.environ.setdefault("CARDPROOF_HOME", str(REPO / ".cardproof"))
    os.environ.setdefault("CARDPROOF_PUBLIC_URL", f"http://127.0.0.1:{port}")

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
    from issuer.runtime import Runtime

    settings = get_settings()
    if once:
        step(1, "in-process chain (py-evm)")
    elif not settings.rpc_url:
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

    out = settings.home / "demo" / f"export-{minted.batch_id[2:14]}"
    exported = export_batch(rt.sessions, rt.master_key, minted.batch_id, out, settings.public_url, force=True)
    step(6, f"exported {exported.cards} cards: {exported.cards_csv}, QR codes in {exported.qr_dir}")

    coin = platform.stablecoin.address
    escrow_admin = Escrow(admin, platform.escrow.address)
    if escrow_admin.rules().fee_bps == 0:
        escrow_admin.set_fee(DEMO_FEE_BPS)  # the platform's fee, public on chain and capped at 1 %
    faucet(admin, coin, buyer.address, 1_000 * 10**6)
    escrow_buyer = escrow_admin.as_account(buyer)
    escrow_issuer = escrow_admin.as_account(issuer)
    escrow_buyer.approve(coin, ORDER_CARDS * UNIT_PRICE)
    now = int(admin.w3.eth.get_block("latest")["timestamp"])
    order_id = escrow_buyer.open_order(issuer.address, DEMO_SKU, ORDER_CARDS, coin, UNIT_PRICE,
                                       now + 3 * 86_400, 86_400)
    escrow_issuer.deliver(order_id, bytes.fromhex(minted.batch_id[2:]), [(0, ORDER_CARDS)])
    settlement = escrow_buyer.confirm(order_id)
    paid = escrow_issuer.withdraw(coin)
    step(7, f"order #{order_id}: {ORDER_CARDS} cards at 9.50 tUSD paid in escrow, delivered, confirmed; "
            f"supplier withdrew {paid / 10**6:.2f} tUSD (fee {settlement.fee / 10**6:.2f})")

    serials = [line.split(",")[0] for line in Path(exported.cards_csv).read_text().splitlines()[1:]]
    if once:
        return self_check(settings, exported, serials, issuer.address, settlement, paid, order_id, escrow_admin)
    from verify_api.cli import serve

    step(8, f"serving the API on http://127.0.0.1:{port} — open a card page:")
    for serial in serials[:3]:
        print(f"   {settings.public_url}/c/{serial}")
    print(f"   {settings.public_url}/v1/cards/{serials[0]}   (JSON with the proof)")
    print(f"   {settings.public_url}/v1/orders/{order_id}    (the order timeline)")
    print("   check independently: .venv/bin/cardproof verify " + f"{settings.public_url}/c/{serials[0]}")
    print("   Ctrl-C stops the server; `.venv/bin/cardproof chain down` stops the chain.", flush=True)
    serve(host="127.0.0.1", port=port, workers=1)
    return 0


def self_check(settings, exported, serials, issuer_address, settlement, paid, order_id, escrow) -> int:  # noqa: ANN001
    import warnings

    import zxingcpp

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from fastapi.testclient import TestClient
    from PIL import Image

    from verify_api.app import create_app

    step(8, "checking the results")
    first = serials[0]
    png = Path(exported.qr_dir) / f"{first}.png"
    decoded = zxingcpp.read_barcodes(Image.open(png))
    check(len(decoded) == 1, "the exported QR image decodes")
    url = decoded[0].text
    check(url == f"{settings.public_url}/c/{first}", f"the QR holds the card URL and nothing else ({url})")
    code = Path(exported.cards_csv).read_text().splitlines()[1].split(",")[1]
    check(code not in url, "the QR does not contain the secret code")
    path = url[len(settings.public_url):]
    with TestClient(create_app(settings)) as http:
        page = http.get(path, headers={"Accept-Language": "en"})
        check(page.status_code == 200 and "text/html" in page.headers["content-type"], f"GET {path} serves the card page")
        answer = http.get(f"/v1/cards/{first}").json()
        check(answer["verdict"] == "authentic", f"the API says the card is authentic ({answer['verdict']})")
        check(answer["issuer"]["address"] == issuer_address, "the API names the issuer")
        check(code not in page.text and code not in str(answer), "no secret code in the page or API answer")
        wrong = http.post(f"/v1/cards/{first}/check", json={"code": "WRONG-CODE"}).json()
        right = http.post(f"/v1/cards/{first}/check", json={"code": code}).json()
        check(wrong.get("match") is False and right.get("match") is True, "the code check tells right from wrong")
        unknown = http.get("/v1/cards/0000-0000-0000-0000-0").json()
        check(unknown["verdict"] == "unknown", "an unknown serial is reported unknown")
        zh = http.get(path, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
        check(zh.status_code == 200 and 'lang="zh-CN"' in zh.text, "the page speaks Chinese when asked")
    order = escrow.order(order_id)
    check(order.status.name in ("CONFIRMED", "RELEASED"), f"the order is settled ({order.status.name})")
    check(paid == settlement.supplier_amount and paid > 0, "the supplier withdrew what settlement credited")
    check(settlement.fee == ORDER_CARDS * UNIT_PRICE * DEMO_FEE_BPS // 10_000, "the platform fee is 0.5 %")
    print("demo: all checks passed")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--once", action="store_true",
                        help="in-process chain and temporary database; check the results and exit")
    parser.add_argument("--port", type=int, default=8000, help="API port (default 8000)")
    args = parser.parse_args()
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
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    rc = main()
    sys.exit(rc)

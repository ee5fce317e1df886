// Generator of the known answers pinned in the core and chain tests, independent of the Python code.
//
//   node tests/core/make_kats.mjs                    print every known answer as one JSON object
//   node tests/core/make_kats.mjs --write-fixture    also rewrite tests/core/fixtures/oz_standard_v1_6.json
//
// The leaves are written out here in their dump JSON form (docs/leaf.md) and handed to the real
// @openzeppelin/merkle-tree (node_modules); the commitment answers use node:crypto (HKDF, HMAC, SHA-256)
// and BigInt base32. Nothing here imports or runs Python. Regenerate only for a new, versioned format:
// an answer that changes for the current format means the Python code is wrong, not the answer.
import { createHash, createHmac, hkdfSync } from "node:crypto";
import { writeFileSync } from "node:fs";
import { StandardMerkleTree } from "@openzeppelin/merkle-tree";

const LEAF_ENCODING = ["uint16", "bytes32", "uint32", "uint80", "bytes32", "uint128", "bytes3", "uint64", "uint8", "bytes32"];

const hex = (buf) => "0x" + Buffer.from(buf).toString("hex");
const sha256 = (...parts) => createHash("sha256").update(Buffer.concat(parts.map((p) => Buffer.from(p)))).digest();
const ascii32 = (s) => hex(Buffer.concat([Buffer.from(s, "ascii"), Buffer.alloc(32 - s.length)]));
const dec = (n) => BigInt(n).toString(10);

// tests/core/core_testlib.py: kat_leaf(i) and MAX_LEAF
const KAT_BATCH_ID = "0xa1b2c3d4e5f60718293a4b5c6d7e8f9012345678" + "00".repeat(11) + "01";
function katLeaf(i) {
  return [
    "2",
    KAT_BATCH_ID,
    dec(i),
    dec(0x0123456789abcdef0123n + BigInt(i)),
    ascii32("GC-EUR-25"),
    "2500",
    "0x455552",
    "1893456000",
    dec(i % 2),
    hex(sha256(`cardproof-kat-${i}`)),
  ];
}
const MAX_LEAF = [
  "2",
  "0x" + "ff".repeat(32),
  dec(2n ** 32n - 1n),
  dec(2n ** 80n - 1n),
  ascii32("Z".repeat(32)),
  dec(2n ** 128n - 1n),
  "0x5a5a5a",
  dec(2n ** 64n - 1n),
  "1",
  "0x" + "ff".repeat(32),
];

// tests/chain/test_registry_verify.py: KAT_LEAVES (issuer = tests/chainkit.py's "issuer", key 0x1000)
const CHAIN_ISSUER = "af1435509aa6ab5afa7f8939d2c006373ea0253d";
const CHAIN_BATCH = "0x" + CHAIN_ISSUER + "00".repeat(11) + "07";
function chainLeaf(i) {
  return [
    "2",
    CHAIN_BATCH,
    dec(i),
    dec(0x1234567890abcdef1234n + BigInt(i)),
    ascii32("GC-100-EUR"),
    "10000",
    "0x455552",
    i === 4 ? "0" : "1893456000",
    dec(i % 2),
    "0x" + (0x11 * i).toString(16).padStart(2, "0").repeat(32),
  ];
}

const out = { leafEncoding: LEAF_ENCODING };

// -- leaf hashes and roots
const single = (v) => StandardMerkleTree.of([v], LEAF_ENCODING);
out.katLeaf0Hash = single(katLeaf(0)).leafHash(katLeaf(0));
out.maxLeafHash = single(MAX_LEAF).leafHash(MAX_LEAF);
out.katRoots = {};
for (let k = 1; k <= 7; k++) {
  out.katRoots[k] = StandardMerkleTree.of(Array.from({ length: k }, (_, i) => katLeaf(i)), LEAF_ENCODING).root;
}

// -- the committed standard-v1 dump: kat_leaf(3, 0, 4, 1, 2, 1)
const FIXTURE_ORDER = [3, 0, 4, 1, 2, 1];
const fixtureTree = StandardMerkleTree.of(FIXTURE_ORDER.map(katLeaf), LEAF_ENCODING);
const fixtureDump = fixtureTree.dump();
out.fixture = {
  order: FIXTURE_ORDER,
  root: fixtureTree.root,
  treeIndices: fixtureDump.values.map((v) => v.treeIndex),
};

// -- the on-chain known answer
const chainValues = [0, 1, 2, 3, 4].map(chainLeaf);
const chainTree = StandardMerkleTree.of(chainValues, LEAF_ENCODING);
out.chain = {
  root: chainTree.root,
  leaf0Hash: chainTree.leafHash(chainValues[0]),
  proof0: chainTree.getProof(0),
};

// -- commitment v2: batch keys, openings, commitments, the display form of an opening
const SECRET = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
const hkdf = (info) => Buffer.from(hkdfSync("sha256", SECRET, Buffer.alloc(0), Buffer.from(info), 32));
const openKey = hkdf("cardproof/open/v2");
const encKey = hkdf("cardproof/enc/v1");
const be32 = (i) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(i);
  return b;
};
const opening = (i) =>
  createHmac("sha256", openKey).update(Buffer.concat([Buffer.from("cardproof/opening/v2\0"), be32(i)])).digest().subarray(0, 16);
const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
function formatOpening(buf) {
  let v = BigInt("0x" + Buffer.from(buf).toString("hex"));
  let s = "";
  for (let i = 0; i < 26; i++) {
    s = CROCKFORD[Number(v & 31n)] + s;
    v >>= 5n;
  }
  return s.match(/.{1,4}/g).join("-");
}
const commitment = (op, canonical) => hex(sha256("cardproof/code/v2\0", op, Buffer.from(canonical, "utf8")));
const INDICES = [0, 1, 255, 0xffffffff];
out.commitment = {
  openKey: hex(openKey),
  encKey: hex(encKey),
  openings: Object.fromEntries(INDICES.map((i) => [i, hex(opening(i))])),
  formatted: Object.fromEntries(INDICES.map((i) => [i, formatOpening(opening(i))])),
  formattedZero: formatOpening(Buffer.alloc(16)),
  formattedMax: formatOpening(Buffer.alloc(16, 0xff)),
  // The canonical forms are written out: "ABCDE-FGHJK-MNPQR-STVWX" folded and exact, "  héllo wörld \n" exact.
  folded0: commitment(opening(0), "ABCDEFGHJKMNPQRSTVWX"),
  exact0: commitment(opening(0), "ABCDE-FGHJK-MNPQR-STVWX"),
  exactUtf8_1: commitment(opening(1), "héllo wörld"),
};

if (process.argv.includes("--write-fixture")) {
  const path = new URL("./fixtures/oz_standard_v1_6.json", import.meta.url);
  writeFileSync(path, JSON.stringify(fixtureDump));
}
process.stdout.write(JSON.stringify(out, null, 2) + "\n");

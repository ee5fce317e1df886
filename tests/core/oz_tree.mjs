// Reference side of the compatibility tests: the real @openzeppelin/merkle-tree.
//
// stdin:  {"leafEncoding": [...], "jobs": [job, ...]} where a job is
//   {"op": "of",     "values": [[...], ...]}   build StandardMerkleTree.of(values, leafEncoding)
//   {"op": "load",   "dump": {...}}            StandardMerkleTree.load(dump) (validates it)
//   (either may carry "proofIndices": [i, ...] to prove only those values; default all)
//   {"op": "verify", "root": "0x..", "value": [...], "proof": ["0x..", ...]}
// stdout: {"results": [result, ...]}, a result being
//   {"root", "dump", "dumpText", "proofs" (by value index, or by proofIndices), "leafHashes" (by value index)}
//   for of/load, {"ok": bool} for verify, or {"error": message} when the library throws.
import { StandardMerkleTree } from "@openzeppelin/merkle-tree";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const input = JSON.parse(Buffer.concat(chunks).toString("utf8"));

function describe(tree, proofIndices) {
  const dump = tree.dump();
  const indices = proofIndices ?? dump.values.map((_, i) => i);
  return {
    root: tree.root,
    dump,
    dumpText: JSON.stringify(dump),
    proofs: indices.map(i => tree.getProof(i)),
    leafHashes: dump.values.map(({ treeIndex }) => dump.tree[treeIndex]),
  };
}

function run(job) {
  try {
    switch (job.op) {
      case "of":
        return describe(StandardMerkleTree.of(job.values, input.leafEncoding), job.proofIndices);
      case "load":
        return describe(StandardMerkleTree.load(job.dump), job.proofIndices);
      case "verify":
        return { ok: StandardMerkleTree.verify(job.root, input.leafEncoding, job.value, job.proof) };
      default:
        return { error: `unknown op ${job.op}` };
    }
  } catch (e) {
    return { error: String(e && e.message ? e.message : e) };
  }
}

process.stdout.write(JSON.stringify({ results: input.jobs.map(run) }));

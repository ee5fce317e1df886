// Reference side of the multiproof tests: the real @openzeppelin/merkle-tree.
//
// stdin:  {"leafEncoding": [...], "jobs": [job, ...]} where a job is
//   {"op": "multi",   "values": [[...], ...], "indexSets": [[i, ...], ...]}
//        StandardMerkleTree.of(values, leafEncoding), then getMultiProof(indexSet) for each set
//   {"op": "process", "leaves": ["0x..", ...], "proof": ["0x..", ...], "proofFlags": [bool, ...]}
//        the library's core processMultiProof over leaf hashes (same accept set as Solidity's)
// stdout: {"results": [result, ...]}, a result being
//   {"root", "multiproofs": [{"leafHashes", "leaves", "proof", "proofFlags", "verified"} | {"error"}, ...]}
//   for multi, {"root"} for process, or {"error": message} when the library throws.
import { StandardMerkleTree } from "@openzeppelin/merkle-tree";
import { processMultiProof } from "@openzeppelin/merkle-tree/dist/core.js";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const input = JSON.parse(Buffer.concat(chunks).toString("utf8"));

function attempt(f) {
  try {
    return f();
  } catch (e) {
    return { error: String(e && e.message ? e.message : e) };
  }
}

function multi(job) {
  const tree = StandardMerkleTree.of(job.values, input.leafEncoding);
  const multiproofs = job.indexSets.map(indices =>
    attempt(() => {
      const mp = tree.getMultiProof(indices);
      return {
        leafHashes: mp.leaves.map(v => tree.leafHash(v)),
        leaves: mp.leaves,
        proof: mp.proof,
        proofFlags: mp.proofFlags,
        verified: tree.verifyMultiProof(mp),
      };
    }),
  );
  return { root: tree.root, multiproofs };
}

function run(job) {
  switch (job.op) {
    case "multi":
      return attempt(() => multi(job));
    case "process":
      return attempt(() => ({
        root: processMultiProof({ leaves: job.leaves, proof: job.proof, proofFlags: job.proofFlags }),
      }));
    default:
      return { error: `unknown op ${job.op}` };
  }
}

process.stdout.write(JSON.stringify({ results: input.jobs.map(run) }));

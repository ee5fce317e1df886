// cardproof: check a card's code on the holder's own device (leaf version 2).
//
//   codeCommitment = SHA-256("cardproof/code/v2" || 0x00 || opening || canonicalCode(code, codeForm))
//
// The same algorithm as issuer/core/commitment.py (tests/api/test_codecheck_js.py runs the pure functions
// below under node and compares them with the Python reference). Nothing here sends anything anywhere: no
// fetch, no storage, no URL, no cookie. The card page's Content-Security-Policy (connect-src falls back to
// default-src 'none', form-action 'none') would refuse a request from this page anyway.
//
// Pure functions (no DOM, usable under node):
//   canonicalCode(code, codeForm)                       -> Uint8Array    (CodeCheckError "type" | "form" | "empty" | "encoding")
//   parseOpening(text)                                  -> Uint8Array(16) (CodeCheckError "opening")
//   commitment(opening, code, codeForm, subtle?)        -> Promise<Uint8Array(32)> (also "unavailable")
//   opens(code, openingText, codeForm, commitmentHex, subtle?) -> Promise<boolean>
// DOM wiring: attach(form), run for every form[data-codecheck] when loaded in a page.

export const CODE_FORM_EXACT = 0;
export const CODE_FORM_FOLDED = 1;
export const OPENING_BYTES = 16;
export const OPENING_SYMBOLS = 26;
export const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"; // Crockford base32 (issuer/core/serial.py)

const ENCODER = new TextEncoder();
export const CODE_DOMAIN = ENCODER.encode("cardproof/code/v2\u0000");

export class CodeCheckError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = "CodeCheckError";
    this.kind = kind;
  }
}

// Python's str.strip() removes what str.isspace() calls white space. That is not String.prototype.trim()'s
// set (trim also removes U+FEFF, and keeps U+001C..U+001F and U+0085), so the set is spelled out.
const PY_SPACE = "\\t-\\r\\u001c-\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, "g");
const FOLD_DROP = /[ \t-]/g; // issuer/core/commitment.py _FOLD_DROP
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const HEX = /^[0-9A-F]*$/;

const VALUE = new Map();
for (let i = 0; i < ALPHABET.length; i++) VALUE.set(ALPHABET[i], i);
VALUE.set("I", 1).set("L", 1).set("O", 0);

export function pyStrip(text) {
  return text.replace(STRIP, "");
}

/** The UTF-8 bytes of `code` that are committed, in `codeForm` (0 exact, 1 folded). */
export function canonicalCode(code, codeForm) {
  if (typeof code !== "string") throw new CodeCheckError("type", "code must be a string");
  let text = pyStrip(code);
  if (codeForm === CODE_FORM_FOLDED) {
    // ASCII letters only, as issuer/core/commitment.py: toUpperCase() follows each runtime's Unicode version.
    text = text.replace(FOLD_DROP, "").replace(/[a-z]+/g, (m) => m.toUpperCase());
  } else if (codeForm !== CODE_FORM_EXACT) {
    throw new CodeCheckError("form", "unknown code form");
  }
  if (!text) throw new CodeCheckError("empty", "code is empty");
  if (LONE_SURROGATE.test(text)) throw new CodeCheckError("encoding", "code is not valid text");
  return ENCODER.encode(text);
}

/** The 16 bytes of an opening: 26 Crockford base32 symbols (case, dashes and spaces ignored; I, L = 1;
 *  O = 0; first symbol 0-7), or 32 hex digits with an optional 0x. The error never repeats the text. */
export function parseOpening(text) {
  if (typeof text !== "string") throw new CodeCheckError("opening", "an opening must be text");
  const t = pyStrip(text).replace(FOLD_DROP, "").toUpperCase();
  if (t.length === 32 || t.length === 34) {
    const hex = t.startsWith("0X") ? t.slice(2) : t;
    if (HEX.test(hex) && hex.length === 2 * OPENING_BYTES) {
      const out = new Uint8Array(OPENING_BYTES);
      for (let i = 0; i < OPENING_BYTES; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
      return out;
    }
  }
  if (t.length !== OPENING_SYMBOLS) {
    throw new CodeCheckError("opening", `an opening is ${OPENING_SYMBOLS} base32 symbols (XXXX-XXXX-...-XX)`);
  }
  let value = 0n;
  for (const c of t) {
    const v = VALUE.get(c);
    if (v === undefined) throw new CodeCheckError("opening", "an opening holds only Crockford base32 symbols");
    value = (value << 5n) | BigInt(v);
  }
  if (value >> BigInt(8 * OPENING_BYTES)) throw new CodeCheckError("opening", "an opening's first symbol is 0-7");
  const out = new Uint8Array(OPENING_BYTES);
  for (let i = OPENING_BYTES - 1; i >= 0; i--) {
    out[i] = Number(value & 0xffn);
    value >>= 8n;
  }
  return out;
}

/** The WebCrypto digest function, or null (browsers hide crypto.subtle outside secure contexts). */
export function webCrypto(scope = globalThis) {
  const subtle = scope.crypto && scope.crypto.subtle;
  return subtle && typeof subtle.digest === "function" ? subtle : null;
}

/** SHA-256(CODE_DOMAIN || opening || canonicalCode(code, codeForm)), 32 bytes. */
export async function commitment(opening, code, codeForm, subtle = webCrypto()) {
  if (!(opening instanceof Uint8Array) || opening.length !== OPENING_BYTES) {
    throw new CodeCheckError("opening", `an opening must be ${OPENING_BYTES} bytes`);
  }
  const canon = canonicalCode(code, codeForm);
  if (!subtle) throw new CodeCheckError("unavailable", "WebCrypto (crypto.subtle) is not available here");
  const message = new Uint8Array(CODE_DOMAIN.length + OPENING_BYTES + canon.length);
  message.set(CODE_DOMAIN, 0);
  message.set(opening, CODE_DOMAIN.length);
  message.set(canon, CODE_DOMAIN.length + OPENING_BYTES);
  return new Uint8Array(await subtle.digest("SHA-256", message));
}

export function hexToBytes32(hex) {
  if (typeof hex !== "string" || !/^0x[0-9a-fA-F]{64}$/.test(hex)) {
    throw new CodeCheckError("commitment", "a commitment is 0x and 64 hex digits");
  }
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = parseInt(hex.slice(2 + 2 * i, 4 + 2 * i), 16);
  return out;
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** Whether `code` with the opening `openingText` opens `commitmentHex` (0x hex). Like opens() in Python,
 *  a code that cannot be committed (empty, unknown form) is false; a malformed opening throws. */
export async function opens(code, openingText, codeForm, commitmentHex, subtle = webCrypto()) {
  const expected = hexToBytes32(commitmentHex);
  const opening = parseOpening(openingText);
  let mine;
  try {
    mine = await commitment(opening, code, codeForm, subtle);
  } catch (err) {
    if (err instanceof CodeCheckError && ["type", "form", "empty", "encoding"].includes(err.kind)) return false;
    throw err;
  }
  return sameBytes(mine, expected);
}

// ---------------------------------------------------------------------------------------------- DOM wiring

/** Wire one `form[data-codecheck]` of the card page. Its messages are server-rendered (translated) elements
 *  `[data-cc-msg=...]` that start hidden; this only shows one of them. The form has no action and its
 *  fields have no name, so even a submission this script failed to stop would carry no code. */
export function attach(form, scope = globalThis) {
  const code = form.querySelector("[data-cc-code]");
  const opening = form.querySelector("[data-cc-opening]");
  const button = form.querySelector("[data-cc-submit]");
  const messages = Array.from(form.querySelectorAll("[data-cc-msg]"));
  const commitmentHex = form.dataset.commitment;
  const codeForm = Number(form.dataset.codeForm);
  let run = 0;

  const show = (name) => {
    for (const m of messages) m.hidden = m.dataset.ccMsg !== name;
    form.dataset.result = name || "";
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const mine = ++run;
    const subtle = webCrypto(scope);
    if (!subtle) return show("unavailable");
    if (!canonicalCodeOk(code.value, codeForm)) return show("empty");
    let ok;
    try {
      ok = await opens(code.value, opening.value, codeForm, commitmentHex, subtle);
    } catch (err) {
      if (mine !== run) return;
      return show(err instanceof CodeCheckError && err.kind === "opening" ? "bad_opening" : "error");
    }
    if (mine === run) show(ok ? "match" : "mismatch");
  });
  for (const field of [code, opening]) {
    field.addEventListener("input", () => {
      run++;
      show(null);
    });
  }

  show(null);
  form.hidden = false;
  if (!webCrypto(scope)) {
    // Outside a secure context (plain http on a public host) browsers offer no crypto.subtle: say so.
    show("unavailable");
    for (const el of [code, opening, button]) el.disabled = true;
  }
}

function canonicalCodeOk(code, codeForm) {
  try {
    canonicalCode(code, codeForm);
    return true;
  } catch {
    return false;
  }
}

if (typeof document !== "undefined") {
  for (const form of document.querySelectorAll("form[data-codecheck]")) attach(form);
}

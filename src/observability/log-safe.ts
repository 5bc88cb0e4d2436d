// Pod-supplied values in log lines: escaped and truncated, so a resource or an id cannot forge
// lines (CR, LF, U+2028/2029), hide or reorder text (bidirectional controls, zero-width, BOM)
// in a terminal or a log viewer, or fill the log with one value.

export const MAX_LOGGED_VALUE = 256;

/** C0, DEL and C1; bidi embeddings, overrides and isolates; zero-width; line/paragraph separators; BOM. */
function isUnsafe(c: number): boolean {
  return c < 0x20 || (c >= 0x7f && c <= 0x9f)
    || c === 0x061c || (c >= 0x200b && c <= 0x200f) || (c >= 0x2028 && c <= 0x202e)
    || (c >= 0x2060 && c <= 0x2069) || c === 0xfeff;
}

/** `\u{XXXX}` for every unsafe code unit, then at most `max` characters and the count cut off. */
export function safeForLog(value: string, max = MAX_LOGGED_VALUE): string {
  // Nearly every value is already safe: it is logged as it is, without a copy.
  if (value.length <= max && isSafe(value)) return value;
  let out = '';
  let i = 0;
  for (; i < value.length && out.length < max; i++) {
    const c = value.charCodeAt(i);
    out += isUnsafe(c) ? `\\u{${c.toString(16).padStart(4, '0')}}` : value[i];
  }
  return i < value.length ? `${out}…(+${value.length - i})` : out;
}

function isSafe(value: string): boolean {
  for (let i = 0; i < value.length; i++) if (isUnsafe(value.charCodeAt(i))) return false;
  return true;
}

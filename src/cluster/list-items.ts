// Reads a Kubernetes list response as it streams in, handing over each element of `items`
// as soon as its text is complete, so the whole list is never held: neither its text nor
// its parsed objects. That matters for the first list, which asks for resourceVersion=0:
// the API server answers it from its watch cache, and before Kubernetes 1.33 the watch cache
// ignores `limit`, so 20,000 AzureIdentities come as one 25 MB response whatever the page
// size. Only the text of one element, and the small envelope (kind, metadata), is kept.

/** An element of `items` above this is a broken response, not an object (etcd caps objects at 1.5 MiB). */
export const MAX_ITEM_CHARS = 8 * 1024 * 1024;

export class ListFormatError extends Error {
  override name = 'ListFormatError';
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const COMMA = 0x2c;

/** Whether the backslashes right before `at` (not looking before `from`) are odd in number: the character at `at` is escaped. */
function oddBackslashesBefore(text: string, at: number, from: number): boolean {
  let k = at - 1;
  while (k >= from && text.charCodeAt(k) === BACKSLASH) k--;
  return ((at - 1 - k) & 1) === 1;
}

/**
 * Push the text in chunks, then call end() for the envelope: the list without its items.
 * Each element of the top-level `items` array goes to `onItem` parsed, in order.
 */
export class ListItemReader {
  readonly #onItem: (item: unknown) => void;
  #depth = 0;
  #inString = false;
  #escaped = false;
  /** Start of the current depth-1 string, when it began in an earlier chunk (keys are short). */
  #key = '';
  #lastKey = '';
  #inItems = false;
  #itemsDone = false;
  /** Envelope text: everything but the elements of `items`. */
  #envelope = '';
  /** Text of the element being read, from earlier chunks. */
  #item = '';

  constructor(onItem: (item: unknown) => void) {
    this.#onItem = onItem;
  }

  push(chunk: string): void {
    // Locals in the loop, fields between chunks: this runs over every character of the list.
    let depth = this.#depth;
    let inString = this.#inString;
    let envelopeFrom = this.#inItems ? -1 : 0;
    let itemFrom = this.#inItems ? 0 : -1;
    let keyFrom = 0;
    let i = 0;
    const n = chunk.length;
    if (inString && this.#escaped) {
      this.#escaped = false;
      i = 1;
    }
    while (i < n) {
      if (inString) {
        // Most of a list is string contents: jump from quote to quote.
        const q = chunk.indexOf('"', i);
        if (q === -1) {
          this.#escaped = oddBackslashesBefore(chunk, n, i);
          if (depth === 1 && !this.#inItems) this.#key += chunk.slice(keyFrom, Math.min(n, keyFrom + 16));
          i = n;
          break;
        }
        if (oddBackslashesBefore(chunk, q, i)) {
          i = q + 1;
          continue;
        }
        inString = false;
        if (depth === 1 && !this.#inItems) this.#lastKey = this.#key + chunk.slice(keyFrom, q);
        i = q + 1;
        continue;
      }
      const c = chunk.charCodeAt(i);
      if (c === QUOTE) {
        inString = true;
        this.#key = '';
        keyFrom = i + 1;
      } else if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
        depth++;
        if (depth === 2 && c === OPEN_ARRAY && this.#lastKey === 'items' && !this.#itemsDone) {
          // Enter items: the envelope keeps `[`; elements are read from here on.
          this.#envelope += chunk.slice(envelopeFrom, i + 1);
          envelopeFrom = -1;
          this.#inItems = true;
          this.#item = '';
          itemFrom = i + 1;
        }
      } else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
        if (depth === 0) throw new ListFormatError('list response: unbalanced brackets');
        if (depth === 2 && this.#inItems) {
          // `]` of items: the last element ends here.
          this.#flushItem(chunk, itemFrom, i);
          this.#inItems = false;
          this.#itemsDone = true;
          itemFrom = -1;
          envelopeFrom = i;
        }
        depth--;
      } else if (c === COMMA && depth === 2 && this.#inItems) {
        this.#flushItem(chunk, itemFrom, i);
        itemFrom = i + 1;
      }
      i++;
    }
    this.#depth = depth;
    this.#inString = inString;
    if (envelopeFrom !== -1) this.#envelope += chunk.slice(envelopeFrom);
    if (itemFrom !== -1) {
      this.#item += chunk.slice(itemFrom);
      if (this.#item.length > MAX_ITEM_CHARS) throw new ListFormatError(`list response: an item over ${MAX_ITEM_CHARS} characters`);
    }
    if (this.#envelope.length > MAX_ITEM_CHARS) throw new ListFormatError('list response: envelope too large');
  }

  /** The list without its items (`items: []`); throws if the text was cut or is not JSON. */
  end(): unknown {
    if (this.#depth !== 0 || this.#inString || this.#inItems) throw new ListFormatError('list response: truncated');
    try {
      return JSON.parse(this.#envelope);
    } catch (err) {
      throw new ListFormatError(`list response: ${(err as Error).message}`);
    }
  }

  #flushItem(chunk: string, from: number, to: number): void {
    const text = (this.#item + chunk.slice(from, to)).trim();
    this.#item = '';
    if (text === '') return; // `[]`, or whitespace before `]`
    let item: unknown;
    try {
      item = JSON.parse(text);
    } catch (err) {
      throw new ListFormatError(`list response: an item is not JSON: ${(err as Error).message}`);
    }
    this.#onItem(item);
  }
}

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

/**
 * Push the text in chunks, then call end() for the envelope: the list without its items.
 * Each element of the top-level `items` array goes to `onItem` parsed, in order.
 */
export class ListItemReader {
  readonly #onItem: (item: unknown) => void;
  #depth = 0;
  #inString = false;
  #escaped = false;
  /** Text of the current top-level string, while it may be a key (depth 1). */
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
    let envelopeFrom = this.#inItems ? -1 : 0;
    let itemFrom = this.#inItems ? 0 : -1;
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk.charCodeAt(i);
      if (this.#inString) {
        if (this.#escaped) this.#escaped = false;
        else if (c === BACKSLASH) this.#escaped = true;
        else if (c === QUOTE) {
          this.#inString = false;
          if (this.#depth === 1 && !this.#inItems) this.#lastKey = this.#key;
        } else if (this.#depth === 1 && !this.#inItems && this.#key.length < 16) this.#key += chunk[i];
        continue;
      }
      if (c === QUOTE) {
        this.#inString = true;
        if (this.#depth === 1) this.#key = '';
      } else if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
        this.#depth++;
        if (this.#depth === 2 && c === OPEN_ARRAY && this.#lastKey === 'items' && !this.#itemsDone) {
          // Enter items: the envelope keeps `[`; elements are read from here on.
          this.#envelope += chunk.slice(envelopeFrom, i + 1);
          envelopeFrom = -1;
          this.#inItems = true;
          this.#item = '';
          itemFrom = i + 1;
        }
      } else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
        if (this.#depth === 0) throw new ListFormatError('list response: unbalanced brackets');
        if (this.#depth === 2 && this.#inItems) {
          // `]` of items: the last element ends here.
          this.#flushItem(chunk, itemFrom, i);
          this.#inItems = false;
          this.#itemsDone = true;
          itemFrom = -1;
          envelopeFrom = i;
        }
        this.#depth--;
      } else if (c === COMMA && this.#depth === 2 && this.#inItems) {
        this.#flushItem(chunk, itemFrom, i);
        itemFrom = i + 1;
      }
    }
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

// List, then watch from the list's resourceVersion; relist after 410 Gone; resume at once
// after an idle timeout; pause 1 s, 2 s ... 30 s before reopening a watch that ended cleanly
// without events; report any other failure once and stop (the caller restarts it with
// backoff). This is client-node's ListWatch loop (dist/cache.js, 2.0.x) without its object
// cache: the index already holds every object by key and a list replaces a whole kind, so
// ListWatch's second map of every key (40,000 on a large cluster), and cache.js's import of
// every generated API model for its serializer, bought nothing here.

export interface WatchOpener {
  /** Opens one watch; `done` is called once when it ends (null: ended cleanly). */
  watch(
    path: string,
    query: Record<string, string | undefined>,
    onEvent: (phase: string, object: WatchedObject) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController>;
}

/** What an event carries as far as this loop is concerned: an error code or a resourceVersion. */
export interface WatchedObject {
  readonly code?: number | undefined;
  readonly metadata?: { readonly resourceVersion?: string | undefined };
}

export interface ListThenWatchHandlers<T extends WatchedObject> {
  /** Lists and applies the whole kind; returns the list's resourceVersion. */
  list(): Promise<string>;
  upsert(item: T): void;
  remove(item: T): void;
  /** A failed list or watch: the loop has stopped. */
  error(err: unknown): void;
  /** The pause before reopening a watch that ended cleanly (`ms` doubles from 1,000 to 30,000). */
  delay(ms: number): Promise<void>;
}

/** The same selectors go on the list and on every watch. */
export interface Selectors {
  readonly fieldSelector?: string | undefined;
  readonly labelSelector?: string | undefined;
}

const BASE_RECONNECT_DELAY_MS = 1_000;
const MAX_RECONNECT_DELAY_MS = 30_000;

function statusOf(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const { statusCode, code } = err as { statusCode?: unknown; code?: unknown };
  return statusCode === 410 || code === 410 ? 410 : undefined;
}

export class ListThenWatch<T extends WatchedObject> {
  readonly #path: string;
  readonly #selectors: Selectors;
  readonly #watch: WatchOpener;
  readonly #handlers: ListThenWatchHandlers<T>;
  #resourceVersion = '';
  #request: AbortController | undefined;
  #stopped = false;
  #hasConnected = false;
  #reconnectDelayMs = 0;

  constructor(path: string, selectors: Selectors, watch: WatchOpener, handlers: ListThenWatchHandlers<T>) {
    this.#path = path;
    this.#selectors = selectors;
    this.#watch = watch;
    this.#handlers = handlers;
  }

  /** Starts, or restarts after an error, from the last resourceVersion seen (or with a list). */
  async start(): Promise<void> {
    this.#stopped = false;
    this.#reconnectDelayMs = 0;
    this.#hasConnected = false;
    await this.#next(null);
  }

  stop(): void {
    this.#stopped = true;
    this.#abort();
  }

  #abort(): void {
    this.#request?.abort();
    this.#request = undefined;
  }

  async #next(err: unknown): Promise<void> {
    this.#abort();
    if (err !== null && err !== undefined) {
      if (statusOf(err) === 410) this.#resourceVersion = '';
      // An idle watch already waited its whole timeout: resume at once.
      else if ((err as { name?: unknown }).name === 'TimeoutError') this.#reconnectDelayMs = 0;
      else {
        this.#handlers.error(err);
        return;
      }
    }
    if (this.#stopped) return;
    if (this.#resourceVersion === '') {
      try {
        this.#resourceVersion = await this.#handlers.list();
      } catch (listErr) {
        this.#handlers.error(listErr);
        return;
      }
    }
    if (this.#reconnectDelayMs > 0 && this.#hasConnected) await this.#handlers.delay(this.#reconnectDelayMs);
    if (this.#stopped) return;
    if (this.#hasConnected) {
      this.#reconnectDelayMs = Math.min(this.#reconnectDelayMs > 0 ? this.#reconnectDelayMs * 2 : BASE_RECONNECT_DELAY_MS, MAX_RECONNECT_DELAY_MS);
    }
    this.#hasConnected = true;
    const query = { resourceVersion: this.#resourceVersion, fieldSelector: this.#selectors.fieldSelector, labelSelector: this.#selectors.labelSelector };
    this.#request = await this.#watch.watch(this.#path, query, (phase, object) => this.#onEvent(phase, object), (doneErr) => this.#next(doneErr));
  }

  #onEvent(phase: string, object: WatchedObject): void {
    switch (phase) {
      case 'ERROR':
        // The stream ends next; a 410 makes that end relist.
        if (object.code === 410) this.#resourceVersion = '';
        return;
      case 'ADDED':
      case 'MODIFIED':
        this.#handlers.upsert(object as T);
        break;
      case 'DELETED':
        this.#handlers.remove(object as T);
        break;
      default: // BOOKMARK: only its resourceVersion matters
    }
    this.#reconnectDelayMs = 0;
    this.#resourceVersion = object.metadata?.resourceVersion ?? '';
  }
}

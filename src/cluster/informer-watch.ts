// The watch that ListThenWatch drives, in place of the library's Watch. It adds what that
// one lacks: bookmarks, a server-side timeout, separate connect and idle bounds, and a filter
// in front of the loop, so that only well-formed events reach it, each object already
// converted: the raw event is dropped as soon as it is read.
import type { KubeHttp, StreamHandle } from './kube-http.ts';
import { KubeApiError } from './kube-http.ts';
import type { WatchedObject, WatchOpener } from './list-then-watch.ts';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
/** Event types as counted; anything else is `malformed`. */
export type CountedEventType = 'added' | 'modified' | 'deleted' | 'bookmark' | 'error' | 'malformed';

type Raw = Record<string, unknown>;

function isRecord(value: unknown): value is Raw {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export interface InformerWatchHooks<T> {
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /** What the loop gets for an object event; undefined drops the event as malformed. */
  toItem(type: 'ADDED' | 'MODIFIED' | 'DELETED', object: Raw): T | undefined;
  onConnect(): void;
  onEvent(type: CountedEventType, detail?: string): void;
  /** A handler of the loop failed: it is reported, never left to become an unhandled rejection. */
  onInternalError(err: unknown): void;
}

type Callback = (phase: string, object: WatchedObject) => unknown;

export class InformerWatch<T extends WatchedObject> implements WatchOpener {
  readonly #http: KubeHttp;
  readonly #hooks: InformerWatchHooks<T>;
  #current: StreamHandle | undefined;
  #closed = false;

  constructor(http: KubeHttp, hooks: InformerWatchHooks<T>) {
    this.#http = http;
    this.#hooks = hooks;
  }

  async watch(
    path: string,
    queryParams: Record<string, string | undefined>,
    callback: (phase: string, object: WatchedObject) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    if (this.#closed) {
      // The loop may come back from a reconnect delay after stop(); it gets a dead request.
      const dead = new AbortController();
      dead.abort();
      return dead;
    }
    const query = {
      ...queryParams,
      watch: true,
      allowWatchBookmarks: true,
      // Like client-go: the server ends the watch after 5-10 minutes, spreading reconnects.
      timeoutSeconds: 300 + Math.floor(Math.random() * 300),
    };
    const handle: StreamHandle = this.#http.stream(path, query, {
      connectTimeoutMs: this.#hooks.connectTimeoutMs,
      idleTimeoutMs: this.#hooks.idleTimeoutMs,
      onConnect: () => this.#hooks.onConnect(),
      onLine: (line) => this.#onLine(line, callback, handle),
      onEnd: (err) => {
        if (this.#current === handle) this.#current = undefined;
        this.#deliver(() => done(err));
      },
    });
    this.#current = handle;
    return handle.controller;
  }

  /** Refuses new watches and aborts the open one without reporting it. */
  close(): void {
    this.#closed = true;
    this.#current?.controller.abort();
    this.#current = undefined;
  }

  #onLine(line: string, callback: Callback, handle: StreamHandle): void {
    let event: unknown;
    try {
      event = JSON.parse(line);
    } catch {
      this.#hooks.onEvent('malformed', 'watch line is not JSON');
      return;
    }
    if (!isRecord(event) || typeof event.type !== 'string' || !isRecord(event.object)) {
      this.#hooks.onEvent('malformed', 'watch event without type or object');
      return;
    }
    const { type, object } = event;
    switch (type) {
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED': {
        const item = this.#hooks.toItem(type, object);
        if (item === undefined) {
          this.#hooks.onEvent('malformed', `${type} event whose object has no metadata.name`);
          return;
        }
        this.#hooks.onEvent(type === 'ADDED' ? 'added' : type === 'MODIFIED' ? 'modified' : 'deleted');
        this.#deliver(() => callback(type, item));
        return;
      }
      case 'BOOKMARK': {
        const rv = isRecord(object.metadata) ? object.metadata.resourceVersion : undefined;
        if (typeof rv !== 'string' || rv === '') {
          this.#hooks.onEvent('malformed', 'bookmark without resourceVersion');
          return;
        }
        this.#hooks.onEvent('bookmark');
        this.#deliver(() => callback('BOOKMARK', { metadata: { resourceVersion: rv } }));
        return;
      }
      case 'ERROR': {
        const code = typeof object.code === 'number' ? object.code : undefined;
        const message = typeof object.message === 'string' ? object.message : 'watch error';
        this.#hooks.onEvent('error', `${code ?? '?'} ${message}`);
        // The loop forgets its resourceVersion on 410 and relists when the stream ends cleanly;
        // other errors go through its error path, so the source backs off before resuming.
        this.#deliver(() => callback('ERROR', { code }));
        handle.end(code === 410 ? null : new KubeApiError(`watch error event: ${message}`, code));
        return;
      }
      default:
        this.#hooks.onEvent('malformed', `unknown watch event type ${JSON.stringify(type).slice(0, 40)}`);
    }
  }

  #deliver(fn: () => unknown): void {
    try {
      const result = fn();
      if (result instanceof Promise) result.catch((err: unknown) => this.#hooks.onInternalError(err));
    } catch (err) {
      this.#hooks.onInternalError(err);
    }
  }
}

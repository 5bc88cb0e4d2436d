// Event writes to the Kubernetes API (core/v1 events: create, merge-patch), each bounded by a
// timeout and abortable on close. Its own connection pool, so Events never queue behind watches.
import { fetch } from 'undici';
import type { Counter } from 'prom-client';
import type { KubeHttp } from '../cluster/kube-http.ts';
import type { EventSink, WriteResult } from './pod-events.ts';

export class KubeEventSink implements EventSink {
  readonly #http: KubeHttp;
  readonly #timeoutMs: number;
  readonly #errors: Counter<'operation_type'>;
  readonly #inflight = new Set<AbortController>();

  constructor(http: KubeHttp, errors: Counter<'operation_type'>, timeoutMs = 5_000) {
    this.#http = http;
    this.#errors = errors;
    this.#timeoutMs = timeoutMs;
  }

  create(namespace: string, event: Record<string, unknown>): Promise<WriteResult> {
    return this.#send('POST', `/api/v1/namespaces/${encodeURIComponent(namespace)}/events`, event, 'application/json', 'create_events');
  }

  patch(namespace: string, name: string, change: Record<string, unknown>): Promise<WriteResult> {
    return this.#send('PATCH', `/api/v1/namespaces/${encodeURIComponent(namespace)}/events/${encodeURIComponent(name)}`, change, 'application/merge-patch+json', 'patch_events');
  }

  async close(): Promise<void> {
    for (const ac of this.#inflight) ac.abort();
    this.#inflight.clear();
    await this.#http.close();
  }

  async #send(method: string, path: string, body: unknown, contentType: string, operation: string): Promise<WriteResult> {
    const ac = new AbortController();
    this.#inflight.add(ac);
    const timer = setTimeout(() => ac.abort(), this.#timeoutMs);
    try {
      const url = this.#http.url(path, {});
      const { headers, dispatcher } = await this.#http.prepare(url);
      const res = await fetch(url, { method, headers: { ...headers, 'Content-Type': contentType }, body: JSON.stringify(body), dispatcher, signal: ac.signal });
      await res.body?.cancel();
      if (res.status === 200 || res.status === 201) return 'ok';
      if (res.status === 404) return 'not_found';
      if (res.status === 409) return 'conflict';
    } catch {
      // timeout, refused connection, closed client: all the same to the caller
    } finally {
      clearTimeout(timer);
      this.#inflight.delete(ac);
    }
    this.#errors.inc({ operation_type: operation });
    return 'failed';
  }
}

// Events on the node for the parts of the interception rules that are kept on their own (the
// hostNetwork chain, the route_localnet guard): a Warning when one cannot be kept, a Normal
// when it is back. Written on changes only, one at a time, off the rule-keeping loop: a slow or
// failing API server delays an Event, never a check. `kubectl describe node` shows them.
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { PartStatus } from '../iptables/index.ts';
import type { EventSink } from './pod-events.ts';

export type RulePart = 'hostNetwork' | 'localnetGuard';

const REASONS: Record<RulePart, { failed: string; restored: string; what: string }> = {
  hostNetwork: { failed: 'HostNetworkInterceptionFailed', restored: 'HostNetworkInterceptionRestored', what: 'hostNetwork interception (chain aad-metadata-host)' },
  localnetGuard: { failed: 'LocalnetGuardFailed', restored: 'LocalnetGuardRestored', what: 'the route_localnet guard (filter chain PODID-NMI-LOCALNET)' },
};
const MAX_MESSAGE = 1024;

export class NodeEvents {
  readonly #sink: EventSink;
  readonly #node: string;
  readonly #log: Logger;
  readonly #last = new Map<RulePart, boolean>();
  #writing: Promise<unknown> = Promise.resolve();

  constructor(o: { sink: EventSink; node: string; log: Logger }) {
    this.#sink = o.sink;
    this.#node = o.node;
    this.#log = o.log;
  }

  /** The part's status after a check; writes an Event when it changed (the first failure included). */
  observe(part: RulePart, status: PartStatus): void {
    const before = this.#last.get(part);
    if (before === status.installed) return;
    this.#last.set(part, status.installed);
    if (before === undefined && status.installed) return;
    const r = REASONS[part];
    const event = status.installed
      ? this.#event(r.restored, 'Normal', `${r.what} is in place again`)
      : this.#event(r.failed, 'Warning', `${r.what} could not be kept; pod-network interception is unaffected: ${status.error ?? ''}`);
    this.#writing = this.#writing.then(() => this.#sink.create('default', event)).then((result) => {
      if (result !== 'ok') this.#log.debug({ reason: event.reason, result }, 'node Event not written');
    });
  }

  async close(): Promise<void> {
    await this.#writing;
    await this.#sink.close();
  }

  #event(reason: string, type: 'Warning' | 'Normal', message: string): Record<string, unknown> {
    const now = new Date().toISOString();
    return {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name: `${this.#node}.${randomBytes(8).toString('hex')}`, namespace: 'default' },
      // kubelet's own node Events use the node's name as uid; kubectl describe node matches on it.
      involvedObject: { apiVersion: 'v1', kind: 'Node', name: this.#node, uid: this.#node },
      reason,
      message: message.length > MAX_MESSAGE ? `${message.slice(0, MAX_MESSAGE - 1)}…` : message,
      type,
      source: { component: 'podid-nmi', host: this.#node },
      reportingComponent: 'podid-nmi',
      reportingInstance: this.#node,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    };
  }
}

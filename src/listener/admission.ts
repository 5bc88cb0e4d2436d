// Admission of each request, before any routing: one request at a time per connection, and a
// bounded number in flight per caller. Pipelining is refused rather than served: node:http would
// start a handler for every request in a pipelined burst at once (a thousand per connection,
// never read, grew the daemon past its memory limit in seconds).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { ClusterView } from '../cluster/view.ts';
import { callerAt } from '../pods/caller.ts';
import { sourceIp } from '../pods/pod-lookup.ts';
import { connectionCaller } from './connection-caller.ts';
import type { Cooldown } from './cooldown.ts';
import { gateOf } from './request-gate.ts';
import { Shares, type ShareLimits } from './shares.ts';

/** `ignored`: left unanswered, because its connection is already being refused and closed. */
export type Admission = 'admitted' | 'ignored' | 'pipelining_refused' | 'body_length_required' | 'requests_over_share';

interface Connection {
  busy: boolean;
  pipelined: boolean;
}

export class RequestAdmission {
  readonly #state: Pick<ClusterView, 'podsAt'>;
  readonly #inFlight: Shares;
  readonly #connections = new WeakMap<Socket, Connection>();

  readonly #cooldown: Cooldown | undefined;

  /** `cooldown`: where a caller that pipelined is put, so its next connections are refused at accept. */
  constructor(state: Pick<ClusterView, 'podsAt'>, limits: ShareLimits, cooldown?: Cooldown) {
    this.#state = state;
    this.#inFlight = new Shares(limits);
    this.#cooldown = cooldown;
  }

  get inFlight(): Shares {
    return this.#inFlight;
  }

  admit(req: IncomingMessage, res: ServerResponse): Admission {
    const socket = req.socket;
    let c = this.#connections.get(socket);
    if (c === undefined) {
      c = { busy: false, pipelined: false };
      this.#connections.set(socket, c);
    }
    if (c.pipelined) return 'ignored';
    const caller = connectionCaller(socket) ?? callerAt(this.#state, sourceIp(socket.remoteAddress));
    // The gate (request-gate.ts) sees pipelining in the bytes, before this request was parsed.
    const gate = gateOf(socket);
    if (gate?.refused !== undefined) {
      c.pipelined = true;
      if (gate.refused === 'chunked') return 'body_length_required';
      this.#cooldown?.start(caller.key);
      return 'pipelining_refused';
    }
    // Without the gate, pipelining shows here, after node:http has parsed the whole burst.
    if (c.busy) {
      // This one is answered (after the first, as HTTP/1.1 orders answers) and closes the
      // connection; reading stops, so no read after this one is parsed.
      c.pipelined = true;
      socket.pause();
      quietAborts(socket);
      this.#cooldown?.start(caller.key);
      return 'pipelining_refused';
    }
    c.busy = true;
    const conn = c;
    const release = this.#inFlight.take(caller);
    // One listener frees both the connection and the caller's share.
    res.once('close', () => {
      conn.busy = false;
      release?.();
    });
    return release === undefined ? 'requests_over_share' : 'admitted';
  }

  /**
   * Whether `admit` would admit the request, for an answer the at-once lane writes before this
   * call returns: in flight only meanwhile, it takes no share (no one else can take one then).
   * False (its connection busy or refused, the caller's share full): node:http's path answers it.
   */
  admitsAtOnce(socket: Socket): boolean {
    const c = this.#connections.get(socket);
    if (c !== undefined && (c.busy || c.pipelined)) return false;
    return this.#inFlight.hasRoom(connectionCaller(socket) ?? callerAt(this.#state, sourceIp(socket.remoteAddress)));
  }
}

/**
 * When the connection closes, node:http destroys every request left unanswered on it with an
 * ECONNRESET error, a stack trace each: most of the cost of a pipelined burst. Those errors go
 * nowhere (nothing listens to these requests), so their stacks are not captured.
 */
function quietAborts(socket: Socket): void {
  let limit = Error.stackTraceLimit;
  socket.prependOnceListener('close', () => { limit = Error.stackTraceLimit; Error.stackTraceLimit = 0; });
  socket.once('close', () => { Error.stackTraceLimit = limit; });
}

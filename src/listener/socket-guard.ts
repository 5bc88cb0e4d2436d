// What happens to sockets before and around HTTP: a share of connections per caller, checked at
// accept, and reaping. A socket that got an error answer (400, 408, 413, 431) or an over-share
// refusal is destroyed as soon as the answer is written: half-closing it (`end()` alone) let a
// client that never reads nor closes keep its slot for minutes.
//
// A connection from the node's own addresses (hostNetwork pods, node processes) cannot be told
// apart by its address: with `attribute`, it is held unread, in a pool of its own, while its
// socket cgroup is read (one batched `ss`, at most a second), then charged to the pod it names.
// Attributing at accept, not at the first request, is what keeps the pool free: a client that
// never sends its headers leaves it after one lookup, not after the header timeout.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { rawRefusal } from '../answer/respond.ts';
import type { Reason } from '../decision/reasons.ts';
import type { Caller } from '../pods/caller.ts';
import { sourceIp } from '../pods/pod-lookup.ts';
import { chargeConnection, connectionCaller } from './connection-caller.ts';
import type { Cooldown } from './cooldown.ts';
import type { AtOnceLane } from './answer-at-once.ts';
import { gateOf, installGate, readInJavaScript, type RequestGate } from './request-gate.ts';
import { Shares, type ShareLimits } from './shares.ts';

export interface SocketGuardOptions extends ShareLimits {
  callerOf(ip: string): Caller;
  /** Callers refused at accept for a while (they pipelined). */
  cooldown?: Cooldown;
  /** One narrow hook for logs and metrics; `ip` is the socket's, never a header's. */
  onRefusal?(reason: Reason | ClientErrorReason, status: number, ip: string): void;
  /**
   * For a connection only its socket cgroup can attribute, how to ask whom it is charged to
   * (resolving undefined: no pod); undefined when its address says.
   */
  attribute?(socket: Socket): (() => Promise<Caller | undefined>) | undefined;
  /** Connections held while their socket cgroup is read, all node addresses together. */
  attributionPool?: number;
  /** Answers what can be answered at once, before node:http parses it (answer-at-once.ts). */
  lane?: AtOnceLane;
}

export type ClientErrorReason = 'header_overflow' | 'request_timeout' | 'request_malformed';

interface ClientErrorAnswer {
  readonly reason: ClientErrorReason;
  readonly status: number;
  readonly bytes: Buffer;
}

const bare = (reason: ClientErrorReason, status: number, text: string): ClientErrorAnswer =>
  ({ reason, status, bytes: Buffer.from(`HTTP/1.1 ${status} ${text}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`, 'latin1') });
const CLIENT_ERRORS: Record<string, ClientErrorAnswer> = {
  HPE_HEADER_OVERFLOW: bare('header_overflow', 431, 'Request Header Fields Too Large'),
  ERR_HTTP_REQUEST_TIMEOUT: bare('request_timeout', 408, 'Request Timeout'),
};
const MALFORMED = bare('request_malformed', 400, 'Bad Request');

/** How long a reaped socket may take to flush its answer to a client that does not read. */
export const REAP_LINGER_MS = 1_000;

/** Writes `answer` if nothing else is being written, then destroys the socket once it is out. */
export function reap(socket: Socket, answer?: Buffer): void {
  if (socket.destroyed) return;
  const inProgress = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true;
  if (answer !== undefined && socket.writable && !inProgress) socket.end(answer);
  socket.destroySoon();
  // A client that never reads keeps 'finish' from firing: the deadline does not wait for it.
  if (!socket.destroyed) setTimeout(() => socket.destroy(), REAP_LINGER_MS).unref();
}

export function guardSockets(server: Server, o: SocketGuardOptions): Shares {
  const shares = new Shares(o);
  const pool = o.attributionPool ?? o.strangers;
  const attributing = new Shares({ perCaller: pool, strangers: pool });
  /** Charges `caller` one connection, or refuses the socket; true when charged. */
  const admit = (socket: Socket, ip: string, caller: Caller): boolean => {
    if (o.cooldown?.active(caller.key) === true) {
      o.onRefusal?.('pipelining_refused', 400, ip);
      reap(socket, rawRefusal('pipelining_refused'));
      return false;
    }
    const release = shares.take(caller);
    if (release === undefined) {
      o.onRefusal?.('connections_over_share', 429, ip);
      reap(socket, rawRefusal('connections_over_share'));
      return false;
    }
    socket.once('close', release);
    return true;
  };
  // Runs before node:http's own connection listener, which runs before the one below.
  server.prependListener('connection', readInJavaScript);
  server.on('connection', (socket: Socket) => {
    const ip = sourceIp(socket.remoteAddress);
    const byAddress = o.callerOf(ip);
    const gateFor = (): RequestGate | undefined =>
      installGate(socket, (verdict) => { if (verdict === 'pipelined') o.cooldown?.start((connectionCaller(socket) ?? byAddress).key); }, o.lane);
    const attribute = o.attribute?.(socket);
    if (attribute === undefined) {
      if (admit(socket, ip, byAddress)) gateFor();
      return;
    }
    const gate = gateFor();
    if (gate === undefined) return void admit(socket, ip, byAddress);
    const held = attributing.take(byAddress);
    if (held === undefined) {
      o.onRefusal?.('connections_over_share', 429, ip);
      return reap(socket, rawRefusal('connections_over_share'));
    }
    socket.once('close', held);
    gate.hold();
    // Only connections the pool took are looked up: a flood refused here costs no `ss` run.
    void attribute().catch(() => undefined).then((pod) => {
      held();
      if (socket.destroyed) return;
      // No pod (a node process, or a cgroup that could not be read): the address's own share.
      const caller = pod ?? byAddress;
      if (!admit(socket, ip, caller)) return;
      chargeConnection(socket, caller);
      gate.release();
    });
  });
  // Before the handler: the gate lets the connection's next request through once this answer is out.
  server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => {
    const gate = gateOf(req.socket);
    if (gate === undefined) return;
    if (gate.refused !== undefined) res.shouldKeepAlive = false;
    gate.answering = res;
    res.once('finish', () => gate.answered());
  });
  // A malformed or timed-out request gets a bare 4xx and its socket goes; nothing reaches the handler.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // node:http times a connection's first request from the accept until it parses one; on a
    // connection the lane has answered all along it has parsed none, and nothing is late.
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' && gateOf(socket)?.answeredAtOnceOnly === true) return;
    const answer = CLIENT_ERRORS[err.code ?? ''] ?? MALFORMED;
    o.onRefusal?.(answer.reason, answer.status, sourceIp(socket.remoteAddress));
    reap(socket, answer.bytes);
  });
  return shares;
}

// What happens to sockets before and around HTTP: a share of connections per caller, checked at
// accept, and reaping. A socket that got an error answer (400, 408, 413, 431) or an over-share
// refusal is destroyed as soon as the answer is written: half-closing it (`end()` alone) let a
// client that never reads nor closes keep its slot for minutes.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { rawRefusal } from '../answer/respond.ts';
import type { Reason } from '../decision/reasons.ts';
import type { Caller } from '../pods/caller.ts';
import { sourceIp } from '../pods/pod-lookup.ts';
import type { Cooldown } from './cooldown.ts';
import { gateOf, installGate, readInJavaScript } from './request-gate.ts';
import { Shares, type ShareLimits } from './shares.ts';

export interface SocketGuardOptions extends ShareLimits {
  callerOf(ip: string): Caller;
  /** Callers refused at accept for a while (they pipelined). */
  cooldown?: Cooldown;
  /** One narrow hook for logs and metrics; `ip` is the socket's, never a header's. */
  onRefusal?(reason: Reason | ClientErrorReason, status: number, ip: string): void;
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
  // Runs before node:http's own connection listener, which runs before the one below.
  server.prependListener('connection', readInJavaScript);
  server.on('connection', (socket: Socket) => {
    const ip = sourceIp(socket.remoteAddress);
    const caller = o.callerOf(ip);
    if (o.cooldown?.active(caller.key) === true) {
      o.onRefusal?.('pipelining_refused', 400, ip);
      return reap(socket, rawRefusal('pipelining_refused'));
    }
    const release = shares.take(caller);
    if (release === undefined) {
      o.onRefusal?.('connections_over_share', 429, ip);
      return reap(socket, rawRefusal('connections_over_share'));
    }
    socket.once('close', release);
    installGate(socket, (verdict) => { if (verdict === 'pipelined') o.cooldown?.start(caller.key); });
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
    const answer = CLIENT_ERRORS[err.code ?? ''] ?? MALFORMED;
    o.onRefusal?.(answer.reason, answer.status, sourceIp(socket.remoteAddress));
    reap(socket, answer.bytes);
  });
  return shares;
}

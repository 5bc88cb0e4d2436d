// The raw node:http server pods talk to. Every timeout and size is bounded, so a slow or
// hostile client costs a socket for seconds, not minutes; the total is capped, and so is each
// caller's part of it (socket-guard.ts).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Server as NetServer, type AddressInfo, type Socket } from 'node:net';
import type { Caller } from '../pods/caller.ts';
import { AtOnceLane, type AnswerAtOnce } from './answer-at-once.ts';
import { guardSockets, type SocketGuardOptions } from './socket-guard.ts';
import type { Shares } from './shares.ts';

export interface ListenerOptions {
  host: string;
  port: number;
  maxConnections?: number;
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
  keepAliveTimeoutMs?: number;
  maxHeaderBytes?: number;
  /** Connections one caller may hold; strangers (no pod known) share `strangerConnections`. */
  connectionsPerCaller?: number;
  strangerConnections?: number;
  callerOf?(ip: string): Caller;
  cooldown?: SocketGuardOptions['cooldown'];
  onRefusal?: SocketGuardOptions['onRefusal'];
  attribute?: SocketGuardOptions['attribute'];
  attributionPool?: number;
  /** What the request path can answer without waiting, answered before node:http parses it. */
  answerAtOnce?: AnswerAtOnce;
  /** Hears a fault of the request path met by the at-once lane. */
  onLaneError?(err: unknown): void;
}

export interface Listener {
  readonly server: Server;
  readonly address: AddressInfo;
  readonly connections: Shares;
  /** The at-once lane (answer-at-once.ts), when the request path gave one: its count is a metric, and bench/at-once.bench.ts drives it in process. */
  readonly lane: AtOnceLane | undefined;
  /** Stops accepting, lets in-flight requests finish within `graceMs`, then cuts what is left. */
  close(graceMs: number): Promise<void>;
}

const byAddress = (ip: string): Caller => ({ key: `ip:${ip}`, known: false });

export async function listen(options: ListenerOptions, handle: (req: IncomingMessage, res: ServerResponse) => void): Promise<Listener> {
  const keepAliveTimeoutMs = options.keepAliveTimeoutMs ?? 5_000;
  const server = createServer({
    maxHeaderSize: options.maxHeaderBytes ?? 8 * 1024,
    headersTimeout: options.headersTimeoutMs ?? 5_000,
    requestTimeout: options.requestTimeoutMs ?? 10_000,
    keepAliveTimeout: keepAliveTimeoutMs,
    connectionsCheckingInterval: 1_000,
    requireHostHeader: false,
    noDelay: true,
  }, handle);
  const maxConnections = options.maxConnections ?? 1024;
  server.maxConnections = maxConnections;
  server.maxRequestsPerSocket = 1000;
  const lane = options.answerAtOnce && new AtOnceLane(options.answerAtOnce, {
    keepAliveTimeoutMs, maxRequestsPerSocket: server.maxRequestsPerSocket, onError: options.onLaneError,
  });
  trackSockets(server);
  const connections = guardSockets(server, {
    perCaller: options.connectionsPerCaller ?? maxConnections,
    strangers: options.strangerConnections ?? maxConnections,
    callerOf: options.callerOf ?? byAddress,
    cooldown: options.cooldown,
    onRefusal: options.onRefusal,
    attribute: options.attribute,
    attributionPool: options.attributionPool,
    lane,
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // reusePort: during a rolling update the next daemon binds the same port beside this one.
    server.listen({ port: options.port, host: options.host, reusePort: true }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    server,
    address: server.address() as AddressInfo,
    connections,
    lane,
    close: (graceMs) => {
      // Every answer from here on closes its connection: node:http's to give (closeGracefully).
      lane?.close();
      return closeGracefully(server, graceMs, 'on-next-request');
    },
  };
}

/**
 * Stops accepting (connections queued on the socket move to another daemon sharing the port,
 * with net.ipv4.tcp_migrate_req=1), answers what is in flight and every later request on a
 * kept-alive connection with `Connection: close`, so its client reconnects (to the next
 * daemon), and cuts what is left after `graceMs`.
 *
 * Idle kept-alive connections: `idle: 'close'` closes them at once (node:http's own close());
 * `'on-next-request'` leaves them to their next request, answered and closed, or to the
 * keep-alive timeout. Closing at once races a client sending its next request on the socket
 * just then: that request is reset unanswered (clients may retry it, RFC 9112 9.3.1, not all
 * do); a close after an answer cannot race.
 */
export function closeGracefully(server: Server, graceMs: number, idle: 'close' | 'on-next-request' = 'close'): Promise<void> {
  return new Promise((resolve) => {
    const open = openSockets.get(server);
    const timer = setTimeout(() => {
      server.closeAllConnections();
      for (const socket of open ?? []) socket.destroy();
    }, graceMs);
    timer.unref();
    const closed = (): void => {
      clearTimeout(timer);
      resolve();
    };
    // node:http's close() also destroys idle connections; net's only stops accepting.
    if (idle === 'close') server.close(closed);
    else NetServer.prototype.close.call(server, closed);
    for (const socket of open ?? []) {
      // node:http's answer in progress on the socket (null or absent when idle).
      const res = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
      if (res != null && !res.headersSent) res.shouldKeepAlive = false;
    }
    // Requests read from now on get the same answer.
    server.prependListener('request', (_req: IncomingMessage, res: ServerResponse) => { res.shouldKeepAlive = false; });
  });
}

const openSockets = new WeakMap<Server, Set<Socket>>();

/** Keeps the server's open sockets, so that closeGracefully can reach those busy with a request. */
export function trackSockets(server: Server): void {
  const open = new Set<Socket>();
  openSockets.set(server, open);
  server.on('connection', (socket: Socket) => {
    open.add(socket);
    socket.once('close', () => open.delete(socket));
  });
}

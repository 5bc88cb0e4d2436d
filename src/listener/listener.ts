// The raw node:http server pods talk to. Every timeout and size is bounded, so a slow or
// hostile client costs a socket for seconds, not minutes; the total is capped, and so is each
// caller's part of it (socket-guard.ts).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Caller } from '../pods/caller.ts';
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
}

export interface Listener {
  readonly server: Server;
  readonly address: AddressInfo;
  readonly connections: Shares;
  /** Stops accepting, lets in-flight requests finish within `graceMs`, then cuts what is left. */
  close(graceMs: number): Promise<void>;
}

const byAddress = (ip: string): Caller => ({ key: `ip:${ip}`, known: false });

export async function listen(options: ListenerOptions, handle: (req: IncomingMessage, res: ServerResponse) => void): Promise<Listener> {
  const server = createServer({
    maxHeaderSize: options.maxHeaderBytes ?? 8 * 1024,
    headersTimeout: options.headersTimeoutMs ?? 5_000,
    requestTimeout: options.requestTimeoutMs ?? 10_000,
    keepAliveTimeout: options.keepAliveTimeoutMs ?? 5_000,
    connectionsCheckingInterval: 1_000,
    requireHostHeader: false,
    noDelay: true,
  }, handle);
  const maxConnections = options.maxConnections ?? 1024;
  server.maxConnections = maxConnections;
  server.maxRequestsPerSocket = 1000;
  const connections = guardSockets(server, {
    perCaller: options.connectionsPerCaller ?? maxConnections,
    strangers: options.strangerConnections ?? maxConnections,
    callerOf: options.callerOf ?? byAddress,
    cooldown: options.cooldown,
    onRefusal: options.onRefusal,
    attribute: options.attribute,
    attributionPool: options.attributionPool,
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    server,
    address: server.address() as AddressInfo,
    connections,
    close: (graceMs) => closeGracefully(server, graceMs),
  };
}

export function closeGracefully(server: Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => server.closeAllConnections(), graceMs);
    timer.unref();
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
    server.closeIdleConnections();
  });
}

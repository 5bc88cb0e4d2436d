// /healthz, /readyz and /metrics for the kubelet and Prometheus. Separate from the listener
// pods reach, and with nothing else on it (NMI exposed pprof here).
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { closeGracefully } from '../listener/listener.ts';
import { guardSockets } from '../listener/socket-guard.ts';

/**
 * Limits of its own, apart from the listener's: with hostNetwork this port is reachable from
 * every pod, and stalled sockets that starved it made the kubelet restart the daemon. Each
 * address (the kubelet's is the node's) holds at most a few connections, each for seconds.
 */
export const PROBE_LIMITS = { connections: 128, perAddress: 8, headersTimeoutMs: 2_000, requestTimeoutMs: 5_000, keepAliveTimeoutMs: 2_000 } as const;

export interface ProbeServerOptions {
  host: string;
  port: number;
  health?: () => boolean;
  ready?: () => boolean;
  registry?: Registry;
}

export interface ProbeServer {
  readonly address: AddressInfo;
  close(): Promise<void>;
}

export async function startProbeServer(o: ProbeServerOptions): Promise<ProbeServer> {
  const server: Server = createServer({
    headersTimeout: PROBE_LIMITS.headersTimeoutMs, requestTimeout: PROBE_LIMITS.requestTimeoutMs,
    keepAliveTimeout: PROBE_LIMITS.keepAliveTimeoutMs, connectionsCheckingInterval: 500, maxHeaderSize: 8 * 1024,
  }, (req, res) => {
    const path = (req.url ?? '').split('?', 1)[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/healthz' && o.health !== undefined) return text(res, o.health() ? 200 : 503, o.health() ? 'ok\n' : 'unhealthy\n');
    if (path === '/readyz' && o.ready !== undefined) return text(res, o.ready() ? 200 : 503, o.ready() ? 'ready\n' : 'not ready\n');
    if (path === '/metrics' && o.registry !== undefined) {
      const registry = o.registry;
      registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
        () => text(res, 500, 'metrics failed\n'),
      );
      return;
    }
    text(res, 404, 'not found\n');
  });
  server.maxConnections = PROBE_LIMITS.connections;
  guardSockets(server, {
    perCaller: PROBE_LIMITS.perAddress, strangers: PROBE_LIMITS.connections,
    callerOf: (ip) => ({ key: ip, known: false }),
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return { address: server.address() as AddressInfo, close: () => closeGracefully(server, 1_000) };
}

function text(res: import('node:http').ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) }).end(body);
}

// /healthz, /readyz and /metrics for the kubelet and Prometheus. Separate from the listener
// pods reach, and with nothing else on it (NMI exposed pprof here).
import { createServer, type Server } from 'node:http';
import { networkInterfaces } from 'node:os';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { closeGracefully, trackSockets } from '../listener/listener.ts';
import { guardSockets } from '../listener/socket-guard.ts';
import { readinessText, type Readiness } from './readiness.ts';

/**
 * Limits of its own, apart from the listener's: with hostNetwork this port is reachable from
 * every pod, and stalled sockets that starved it made the kubelet restart the daemon. Each
 * address holds at most a few connections, each for seconds, and addresses that are not the
 * node's own (pods, other hosts) share half the total: the kubelet, calling from the node's
 * address, always has room.
 */
export const PROBE_LIMITS = { connections: 128, perAddress: 8, others: 64, headersTimeoutMs: 2_000, requestTimeoutMs: 5_000, keepAliveTimeoutMs: 2_000 } as const;

/** The node's own addresses, as sockets report them: a pod cannot send from one of these. */
function nodeAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.add(a.address);
  return out;
}

export interface ProbeServerOptions {
  host: string;
  port: number;
  health?: () => boolean;
  ready?: () => Readiness;
  registry?: Registry;
  /**
   * Not shared with another daemon (the metrics port, when apart from the probes): a scrape
   * then always reaches the daemon whose counters it read last, old until it stops, new after:
   * a target's counters change process once, never back and forth.
   */
  exclusive?: boolean;
  /**
   * While another process holds the port and does not share it (the previous daemon of a
   * rolling update, for an exclusive port or a version before SO_REUSEPORT), retry until it
   * lets go instead of failing.
   */
  whenHeld?: { onWaiting(): void; onBound(): void };
}

export interface ProbeServer {
  /** Where it listens; a server still waiting for its port reports the port it waits for. */
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
    if (path === '/readyz' && o.ready !== undefined) {
      const r = o.ready();
      return text(res, r.ready ? 200 : 503, readinessText(r));
    }
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
  trackSockets(server);
  const own = nodeAddresses();
  guardSockets(server, {
    perCaller: PROBE_LIMITS.perAddress, strangers: PROBE_LIMITS.others,
    callerOf: (ip) => ({ key: ip, known: own.has(ip) }),
  });
  const bind = (): Promise<void> => new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // Shared with the next daemon during a rolling update (the kubelet's probes may reach either).
    server.listen({ port: o.port, host: o.host, reusePort: o.exclusive !== true }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  let retry: NodeJS.Timeout | undefined;
  let closed = false;
  try {
    await bind();
  } catch (err) {
    const held = o.whenHeld;
    if (held === undefined || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    held.onWaiting();
    const again = (): void => {
      retry = setTimeout(() => {
        if (closed) return;
        bind().then(() => held.onBound(), () => again());
      }, HELD_RETRY_MS);
    };
    again();
  }
  const waitingFor: AddressInfo = { address: o.host, port: o.port, family: o.host.includes(':') ? 'IPv6' : 'IPv4' };
  return {
    get address() { return (server.address() as AddressInfo | null) ?? waitingFor; },
    close: () => {
      closed = true;
      clearTimeout(retry);
      return closeGracefully(server, 1_000);
    },
  };
}

/** How often a server tries its port again while another daemon holds it. */
export const HELD_RETRY_MS = 200;

function text(res: import('node:http').ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) }).end(body);
}

// /healthz, /readyz and /metrics for the kubelet and Prometheus. Separate from the listener
// pods reach, and with nothing else on it (NMI exposed pprof here).
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { closeGracefully } from '../listener/listener.ts';
import { readinessText, type Readiness } from './readiness.ts';

export interface ProbeServerOptions {
  host: string;
  port: number;
  health?: () => boolean;
  ready?: () => Readiness;
  registry?: Registry;
}

export interface ProbeServer {
  readonly address: AddressInfo;
  close(): Promise<void>;
}

export async function startProbeServer(o: ProbeServerOptions): Promise<ProbeServer> {
  const server: Server = createServer({ headersTimeout: 5_000, requestTimeout: 10_000, keepAliveTimeout: 5_000 }, (req, res) => {
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
  server.maxConnections = 64;
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

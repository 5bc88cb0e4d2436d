// The admin endpoint: HTTP on a unix socket (--admin-socket) that `nmi status` reads. A file
// socket of mode 0600 (its directory is made 0700 when missing; an existing one, such as the
// DaemonSet's emptyDir, is left as it is): only root where the file is visible, the daemon's
// own container (or the node, through the emptyDir's path), can connect. Pods cannot: it has no
// address, and an abstract socket, which any process in the node's network namespace could
// reach, is not used.
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import { createServer, type ServerResponse } from 'node:http';
import { dirname } from 'node:path';
import { closeGracefully } from '../listener/listener.ts';
import { readinessText, type Readiness } from '../probes/readiness.ts';
import type { NodeStatus } from './node-status.ts';

export interface AdminServerOptions {
  path: string;
  status(): Promise<NodeStatus>;
  ready(): Readiness;
}

export interface AdminServer {
  readonly path: string;
  close(): Promise<void>;
}

/** Few and short: the kubelet's exec probe and an operator, never a crowd. */
const LIMITS = { connections: 16, headersTimeoutMs: 2_000, requestTimeoutMs: 5_000, keepAliveTimeoutMs: 1_000 } as const;

export async function startAdminServer(o: AdminServerOptions): Promise<AdminServer> {
  await mkdir(dirname(o.path), { recursive: true, mode: 0o700 });
  await removeStaleSocket(o.path);
  const server = createServer({
    headersTimeout: LIMITS.headersTimeoutMs, requestTimeout: LIMITS.requestTimeoutMs,
    keepAliveTimeout: LIMITS.keepAliveTimeoutMs, maxHeaderSize: 8 * 1024,
  }, (req, res) => {
    const path = (req.url ?? '').split('?', 1)[0];
    if (req.method !== 'GET') return send(res, 405, 'text/plain', 'method not allowed\n');
    if (path === '/readyz') {
      const r = o.ready();
      return send(res, r.ready ? 200 : 503, 'text/plain', readinessText(r));
    }
    if (path === '/status') {
      o.status().then(
        (s) => send(res, 200, 'application/json', `${JSON.stringify(s)}\n`),
        (err: unknown) => send(res, 500, 'text/plain', `status failed: ${err instanceof Error ? err.message : String(err)}\n`),
      );
      return;
    }
    send(res, 404, 'text/plain', 'not found: GET /status or /readyz\n');
  });
  server.maxConnections = LIMITS.connections;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(o.path, 0o600);
  return {
    path: o.path,
    async close() {
      await closeGracefully(server, 500);
      // A socket file left behind would only be replaced at the next start, but say what is ours.
      await unlink(o.path).catch(() => {});
    },
  };
}

/**
 * A socket left by the previous run of this container (the emptyDir outlives a restart) is
 * removed; anything that is not a socket is left alone and the start fails, never deletes it.
 */
async function removeStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (st === undefined) return;
  if (!st.isSocket()) throw new Error(`--admin-socket ${path} exists and is not a socket; refusing to replace it`);
  await unlink(path);
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': `${type}; charset=utf-8`, 'content-length': Buffer.byteLength(body) }).end(body);
}

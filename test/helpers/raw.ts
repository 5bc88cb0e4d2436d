// Raw sockets for hostile clients: stalled, pipelining, never reading. Each plays a pod by
// binding to 127.0.0.x, and each test tears down every socket it opened.
import { connect, type Socket } from 'node:net';
import type { Test } from 'tap';

export interface RawConnection {
  readonly socket: Socket;
  /** Everything received so far (latin1). */
  received(): string;
  /** Resolves when the connection is closed, from either side. */
  readonly closed: Promise<void>;
}

/** Opens a connection from `from` and writes `bytes` (if any). With `read: false` nothing is ever read. */
export function openRaw(t: Test, port: number, from: string, bytes?: string, o: { read?: boolean } = {}): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, localAddress: from });
    t.teardown(() => { socket.destroy(); });
    let data = '';
    const closed = new Promise<void>((done) => socket.once('close', () => done()));
    socket.on('error', () => {});
    socket.once('connect', () => {
      socket.off('error', reject);
      if (o.read === false) socket.pause();
      else socket.on('data', (d: Buffer) => { data += d.toString('latin1'); });
      if (bytes !== undefined) socket.write(bytes);
      resolve({ socket, received: () => data, closed });
    });
    socket.once('error', reject);
  });
}

export interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
  json: Record<string, unknown> | undefined;
}

/** Every complete HTTP/1.1 answer in `data`, in order (content-length framed, as the daemon sends). */
export function parseAnswers(data: string): RawAnswer[] {
  const out: RawAnswer[] = [];
  let at = 0;
  while (at < data.length) {
    const end = data.indexOf('\r\n\r\n', at);
    if (end === -1) break;
    const [statusLine, ...lines] = data.slice(at, end).split('\r\n');
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const length = Number(headers['content-length'] ?? 0);
    const body = data.slice(end + 4, end + 4 + length);
    let json: Record<string, unknown> | undefined;
    try { json = JSON.parse(body) as Record<string, unknown>; } catch { json = undefined; }
    out.push({ status: Number(statusLine!.split(' ')[1]), headers, body, json });
    at = end + 4 + length;
  }
  return out;
}

export const tokenRequest = (resource = 'https://vault.azure.net'): string =>
  `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=${encodeURIComponent(resource)} HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n`;

export async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`not in time: ${what}`);
}

/** Resident set size of this process (daemon and attackers together), in MiB. */
export function rssMiB(): number {
  return process.memoryUsage.rss() / (1 << 20);
}

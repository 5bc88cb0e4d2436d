// A client that plays a pod: binds its socket to 127.0.0.x, one connection per request, bounded.
import { request as httpRequest } from 'node:http';

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  json: Record<string, unknown> | undefined;
}

export interface Ask {
  from?: string;
  method?: string;
  headers?: Record<string, string | string[]>;
  body?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export function ask(port: number, path: string, o: Ask = {}, host = '127.0.0.1'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      host, port, path, method: o.method ?? 'GET', headers: o.headers ?? {},
      localAddress: o.from, agent: false, timeout: o.timeoutMs ?? 10_000, signal: o.signal,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        let json: Record<string, unknown> | undefined;
        try { json = JSON.parse(body) as Record<string, unknown>; } catch { json = undefined; }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`request to ${path} timed out`)));
    req.on('error', reject);
    req.end(o.body);
  });
}

export const META = { Metadata: 'true' } as const;

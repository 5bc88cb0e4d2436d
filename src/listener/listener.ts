// The raw node:http server pods talk to. Every timeout and size is bounded, so a slow or
// hostile client costs a socket for seconds, not minutes, and the total is capped.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ListenerOptions {
  host: string;
  port: number;
  maxConnections?: number;
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
  keepAliveTimeoutMs?: number;
  maxHeaderBytes?: number;
}

export interface Listener {
  readonly server: Server;
  readonly address: AddressInfo;
  /** Stops accepting, lets in-flight requests finish within `graceMs`, then cuts what is left. */
  close(graceMs: number): Promise<void>;
}

const bare = (status: string): string => `HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`;
const CLIENT_ERRORS: Record<string, string> = {
  HPE_HEADER_OVERFLOW: bare('431 Request Header Fields Too Large'),
  ERR_HTTP_REQUEST_TIMEOUT: bare('408 Request Timeout'),
  default: bare('400 Bad Request'),
};

export async function listen(options: ListenerOptions, handle: (req: IncomingMessage, res: ServerResponse) => void): Promise<Listener> {
  const server = createServer({
    maxHeaderSize: options.maxHeaderBytes ?? 8 * 1024,
    headersTimeout: options.headersTimeoutMs ?? 5_000,
    requestTimeout: options.requestTimeoutMs ?? 30_000,
    keepAliveTimeout: options.keepAliveTimeoutMs ?? 5_000,
    connectionsCheckingInterval: 1_000,
    requireHostHeader: false,
    noDelay: true,
  }, handle);
  server.maxConnections = options.maxConnections ?? 1024;
  server.maxRequestsPerSocket = 1000;
  // A malformed request gets a bare 4xx and the socket closes; nothing reaches the handler.
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) return socket.destroy();
    socket.end(CLIENT_ERRORS[err.code ?? ''] ?? CLIENT_ERRORS.default);
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

// An answer written straight to the socket, byte for byte what node:http writes for the same
// writeHead + end (status line, the headers in their order, Date, Connection, Keep-Alive), in one
// write. The at-once lane (listener/answer-at-once.ts) uses it where node:http parsed nothing.
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { AnswerTarget } from './respond.ts';

export class RawAnswer implements AnswerTarget {
  headersSent = false;
  /** False: `Connection: close`, and the socket goes once the answer is out. */
  shouldKeepAlive: boolean;
  readonly socket: Socket;
  readonly #keepAlive: string;
  #status = 200;
  #headers: Readonly<Record<string, string | number>> = {};

  /** `keepAlive`: the Keep-Alive header line node:http would send; `last`: the connection's last answer. */
  constructor(socket: Socket, keepAlive: string, last: boolean) {
    this.socket = socket;
    this.#keepAlive = keepAlive;
    this.shouldKeepAlive = !last;
  }

  get destroyed(): boolean {
    return this.socket.destroyed;
  }

  /** Written (node:http: handed to the socket). */
  get writableFinished(): boolean {
    return this.headersSent;
  }

  /** 'close': the connection closed. */
  once(event: 'close', listener: () => void): this {
    this.socket.once(event, listener);
    return this;
  }

  writeHead(status: number, headers: Readonly<Record<string, string | number>>): this {
    this.#status = status;
    this.#headers = headers;
    return this;
  }

  end(body: Buffer): this {
    if (this.headersSent) return this;
    this.headersSent = true;
    const socket = this.socket;
    if (!socket.writable) return this;
    socket.write(this.#bytes(body));
    if (!this.shouldKeepAlive) socket.destroySoon();
    return this;
  }

  /**
   * The answer's bytes. A body is answered the same way again and again (a refusal's, a cached
   * token's, for a second of its life): the bytes are kept with it, for the same status, header
   * object, connection header and Date second.
   */
  #bytes(body: Buffer): Buffer {
    const second = dateSecond();
    const kept = written.get(body);
    if (kept !== undefined && kept.second === second && kept.status === this.#status && kept.headers === this.#headers
      && kept.keepAlive === this.shouldKeepAlive && kept.keepAliveLine === this.#keepAlive) return kept.bytes;
    let head = `HTTP/1.1 ${this.#status} ${STATUS_CODES[this.#status] ?? 'unknown'}\r\n`;
    const headers = this.#headers;
    for (const name in headers) head += `${name}: ${headers[name]}\r\n`;
    head += `Date: ${utcDate(second)}\r\n${this.shouldKeepAlive ? `Connection: keep-alive\r\n${this.#keepAlive}` : 'Connection: close\r\n'}\r\n`;
    // Header values are ASCII (node:http would have refused anything else), so latin1 is one byte a character.
    const bytes = Buffer.allocUnsafeSlow(head.length + body.length);
    bytes.write(head, 0, 'latin1');
    body.copy(bytes, head.length);
    written.set(body, { second, status: this.#status, headers, keepAlive: this.shouldKeepAlive, keepAliveLine: this.#keepAlive, bytes });
    return bytes;
  }
}

interface Written {
  readonly second: number;
  readonly status: number;
  readonly headers: Readonly<Record<string, string | number>>;
  readonly keepAlive: boolean;
  readonly keepAliveLine: string;
  readonly bytes: Buffer;
}

/** Each body's last answer, gone with the body. */
const written = new WeakMap<Buffer, Written>();

/** node:http's Keep-Alive line for a server's settings. */
export function keepAliveLine(keepAliveTimeoutMs: number, maxRequestsPerSocket: number): string {
  return `Keep-Alive: timeout=${Math.floor(keepAliveTimeoutMs / 1000)}${maxRequestsPerSocket > 0 ? `, max=${maxRequestsPerSocket}` : ''}\r\n`;
}

const dateSecond = (): number => Math.floor(Date.now() / 1000);

let formattedSecond = -1;
let formatted = '';

/** The Date header's value for a second, formatted once. */
function utcDate(second: number): string {
  if (second !== formattedSecond) {
    formattedSecond = second;
    formatted = new Date(second * 1000).toUTCString();
  }
  return formatted;
}

// The at-once lane's reading of a request head (answer-at-once.ts): a strict subset of HTTP/1.1
// that every SDK's token request falls in, read from the bytes the gate already holds. Anything
// outside it (another method or version, a body, Connection other than keep-alive or close, Expect,
// Upgrade, obs-text, a repeated Metadata, many headers) is left to node:http's own parser, so
// the lane never has to agree with llhttp on a corner case: it only ever reads heads that llhttp
// reads the same way.
import type { Socket } from 'node:net';

/** The headers the request path reads, as node:http would report them (lower-case names, trimmed values). */
export interface HeadHeaders {
  metadata?: string;
  'x-forwarded-for'?: string;
  forwarded?: string;
}

/** What the request path reads of a request, whoever parsed it: node:http's IncomingMessage is one. */
export interface RequestSeen {
  readonly method?: string;
  readonly url?: string;
  readonly headers: { readonly metadata?: string | string[]; readonly 'x-forwarded-for'?: unknown; readonly forwarded?: unknown };
}

/** A request the lane read (readHead) on its connection. */
export interface RequestHead extends RequestSeen {
  readonly method: string;
  readonly url: string;
  readonly headers: HeadHeaders;
  readonly socket: Socket;
  /** The request said Connection: close. */
  readonly close: boolean;
}

/** More headers than this go to node:http: its own cap (2,000) drops the rest silently. */
export const MAX_LANE_HEADERS = 32;

// Header lines: a token name, a colon, a value of visible ASCII, space and tab. One native scan;
// it cannot backtrack, each line's parts being told apart by ':' and CR. Sticky: it starts where
// the request line ends, without a copy.
const HEADER_LINES = /(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e]*\r\n)*\r\n$/y;
// A request target of visible ASCII only.
const TARGET = /^[\x21-\x7e]+$/;

/**
 * `head` is one whole head (request line to the blank line, latin1), nothing after it.
 * Undefined: node:http reads it instead.
 */
export function readHead(head: string): { method: string; url: string; headers: HeadHeaders; close: boolean } | undefined {
  // GET only: every other method is rare here, and may carry a body.
  if (!head.startsWith('GET /')) return undefined;
  const space = head.indexOf(' ', 4);
  if (space === -1 || !head.startsWith(' HTTP/1.1\r\n', space)) return undefined;
  const url = head.slice(4, space);
  if (!TARGET.test(url)) return undefined;
  const first = space + 11;
  HEADER_LINES.lastIndex = first;
  if (!HEADER_LINES.test(head)) return undefined;
  const headers: HeadHeaders = {};
  let close = false;
  let connection = false;
  let count = 0;
  for (let at = first; at < head.length - 2;) {
    const end = head.indexOf('\r\n', at);
    if (++count > MAX_LANE_HEADERS) return undefined;
    const colon = head.indexOf(':', at);
    const nameLength = colon - at;
    // Only the names the request path reads, or that change how the request is framed, matter;
    // they are told apart by length first, so most lines cost no comparison.
    switch (nameLength) {
      case 8:
        if (sameName(head, at, 'metadata')) {
          if (headers.metadata !== undefined) return undefined;
          headers.metadata = value(head, colon + 1, end);
        }
        break;
      case 15:
        if (sameName(head, at, 'x-forwarded-for')) headers['x-forwarded-for'] = value(head, colon + 1, end);
        break;
      case 9:
        if (sameName(head, at, 'forwarded')) headers.forwarded = value(head, colon + 1, end);
        break;
      case 10:
        if (sameName(head, at, 'connection')) {
          if (connection) return undefined;
          connection = true;
          // The answer closes the connection, as node:http's does; other tokens are its to read.
          const token = value(head, colon + 1, end).toLowerCase();
          if (token === 'close') close = true;
          else if (token !== 'keep-alive') return undefined;
        }
        break;
      case 14:
        if (sameName(head, at, 'content-length')) return undefined;
        break;
      case 17:
        if (sameName(head, at, 'transfer-encoding')) return undefined;
        break;
      case 7:
        if (sameName(head, at, 'upgrade')) return undefined;
        break;
      case 6:
        if (sameName(head, at, 'expect')) return undefined;
        break;
    }
    at = end + 2;
  }
  return { method: 'GET', url, headers, close };
}

/** Whether the name at `at` is `lower` in any case (`lower` is lower-case ASCII letters and '-'). */
function sameName(text: string, at: number, lower: string): boolean {
  for (let i = 0; i < lower.length; i++) {
    if ((text.charCodeAt(at + i) | 0x20) !== lower.charCodeAt(i)) return false;
  }
  return true;
}

/** The value without the spaces and tabs around it, as node:http trims it. */
function value(text: string, from: number, to: number): string {
  while (from < to && isBlank(text.charCodeAt(from))) from++;
  while (to > from && isBlank(text.charCodeAt(to - 1))) to--;
  return text.slice(from, to);
}

const isBlank = (c: number): boolean => c === 0x20 || c === 0x09;

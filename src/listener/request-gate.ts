// One request at a time per connection, enforced on the bytes before node:http parses them.
// node:http parses a whole read at once (up to 64 KiB, about 400 small requests) and builds a
// request and a response object for each before any handler can object: a thousand pipelined
// requests on each of 500 connections took seconds of CPU and hundreds of MiB. The gate hands
// the parser one request (head and Content-Length body) and holds back the rest; bytes that
// arrive before the answer is written are pipelining: they are dropped, and the connection is
// answered with a refusal and closed.
//
// This needs the socket's bytes in JavaScript: the listener marks each accepted handle as
// consumed so node:http reads through its 'data' listener, which the gate then wraps. Both are
// node:http internals (Node 24); `installGate` returns false when they are not as expected, and
// the tests fail if the gate stops working. With the head's bytes in hand, the gate first offers
// a whole head to the at-once lane (answer-at-once.ts), which answers what needs no waiting
// without node:http's request objects; node:http parses the rest.
import type { Socket } from 'node:net';
import type { AtOnceLane, LastHead } from './answer-at-once.ts';

/** Head bytes scanned for their end; larger heads are node:http's to refuse (431). */
const MAX_SCANNED_HEAD = 16 * 1024;
const HEAD_END = Buffer.from('\r\n\r\n', 'latin1');
/** Bytes kept while a connection is held: a head and the largest body a route takes, with room. */
const MAX_HELD = 80 * 1024;

export type GateVerdict = 'pipelined' | 'chunked';

/** What the gate needs of the answer in progress: to make it the connection's last. */
export interface AnswerInProgress {
  shouldKeepAlive: boolean;
  readonly headersSent: boolean;
}

export interface RequestGate {
  /** Set once the connection sent more than one request at a time, or a chunked body. */
  readonly refused: GateVerdict | undefined;
  /** The answer being prepared for the current request; it closes the connection if pipelining shows up meanwhile. */
  answering: AnswerInProgress | undefined;
  /** Called when the answer to the current request is written: the next request may come. */
  answered(): void;
  /** Keeps what arrives from the parser until `release` (the caller is not known yet); past MAX_HELD the socket goes. */
  hold(): void;
  /** The lane has answered every request so far: node:http's parser has seen none. */
  readonly answeredAtOnceOnly: boolean;
  release(): void;
}

type Phase = 'head' | 'body' | 'waiting' | 'dropping';

class Gate implements RequestGate {
  refused: GateVerdict | undefined;
  answering: AnswerInProgress | undefined;
  #phase: Phase = 'head';
  #head: Buffer = Buffer.alloc(0);
  #bodyLeft = 0;
  #held: Buffer[] | undefined;
  #heldBytes = 0;
  readonly #socket: Socket;
  readonly #parse: (chunk: Buffer) => void;
  readonly #onRefused: (verdict: GateVerdict) => void;
  readonly #lane: AtOnceLane | undefined;
  /** Answers the at-once lane gave on this connection. */
  #served = 0;
  /** node:http's parser has been given bytes of this connection. */
  #parserFed = false;
  /** The lane set the keep-alive timeout (node:http sets its own after its answers). */
  #idleTimeout = false;
  readonly #lastHead: LastHead = { text: '', head: undefined };

  constructor(socket: Socket, parse: (chunk: Buffer) => void, onRefused: (verdict: GateVerdict) => void, lane?: AtOnceLane) {
    this.#socket = socket;
    this.#parse = parse;
    this.#onRefused = onRefused;
    this.#lane = lane;
  }

  answered(): void {
    this.answering = undefined;
    if (this.#phase !== 'waiting') return;
    this.#phase = 'head';
    this.#head = Buffer.alloc(0);
  }

  hold(): void {
    this.#held ??= [];
  }

  release(): void {
    const held = this.#held;
    this.#held = undefined;
    for (const chunk of held ?? []) if (!this.#socket.destroyed) this.onData(chunk);
  }

  onData(chunk: Buffer): void {
    if (this.#held !== undefined) {
      this.#heldBytes += chunk.length;
      if (this.#heldBytes > MAX_HELD) this.#socket.destroy();
      else this.#held.push(chunk);
      return;
    }
    switch (this.#phase) {
      case 'dropping': return;
      case 'waiting': return this.#refuse('pipelined');
      case 'body': return this.#body(chunk);
      case 'head': return this.#headBytes(chunk);
    }
  }

  #headBytes(chunk: Buffer): void {
    const before = this.#head.length;
    const scanned = before === 0 ? chunk : Buffer.concat([this.#head, chunk]);
    const end = scanned.indexOf(HEAD_END, Math.max(0, before - 3));
    if (end === -1) {
      this.#head = scanned.length > MAX_SCANNED_HEAD ? Buffer.alloc(0) : scanned;
      return this.#toParser(chunk);
    }
    const headLength = end + 4;
    const text = scanned.subarray(0, headLength).toString('latin1');
    // The usual request: its whole head in this read and nothing after it, answerable at once.
    if (before === 0 && headLength === chunk.length && this.#lane?.answer(this.#socket, text, this.#served, this.#lastHead) === true) {
      return this.#answeredAtOnce();
    }
    if (/\r\ntransfer-encoding[ \t]*:/i.test(text)) {
      // Its end cannot be found without decoding it; no IMDS client sends one.
      return this.#refuse('chunked', chunk.subarray(0, headLength - before));
    }
    const length = /\r\ncontent-length[ \t]*:[ \t]*(\d{1,9})[ \t]*\r\n/i.exec(text);
    this.#bodyLeft = length === null ? 0 : Number(length[1]);
    const rest = chunk.subarray(headLength - before);
    const body = rest.subarray(0, this.#bodyLeft);
    this.#bodyLeft -= body.length;
    const request = chunk.subarray(0, headLength - before + body.length);
    this.#phase = this.#bodyLeft > 0 ? 'body' : 'waiting';
    // Judged before the parser sees this request, so the request itself carries the refusal.
    if (rest.length > body.length) this.#refuse('pipelined');
    this.#toParser(request);
  }

  #body(chunk: Buffer): void {
    const body = chunk.subarray(0, this.#bodyLeft);
    this.#bodyLeft -= body.length;
    if (this.#bodyLeft === 0) this.#phase = 'waiting';
    if (chunk.length > body.length) this.#refuse('pipelined');
    this.#toParser(body);
  }

  /**
   * Set while the lane has answered every request of the connection: node:http's parser has seen
   * none, so the header timeout it reports for the connection (its clock runs from the accept
   * until a first request it parses) is not one.
   */
  get answeredAtOnceOnly(): boolean {
    return this.#served > 0 && !this.#parserFed;
  }

  #answeredAtOnce(): void {
    this.#served++;
    // As node:http after an answer: an idle connection goes after the keep-alive timeout.
    if (!this.#idleTimeout) {
      this.#idleTimeout = true;
      this.#socket.setTimeout(this.#lane!.options.keepAliveTimeoutMs);
    }
  }

  #toParser(bytes: Buffer): void {
    this.#parserFed = true;
    // node:http's keep-alive timeout must not cut the request it is now reading; it sets its own
    // header and request timeouts for it, and its keep-alive timeout again once it has answered.
    if (this.#idleTimeout) {
      this.#idleTimeout = false;
      this.#socket.setTimeout(0);
    }
    this.#parse(bytes);
  }

  /** From here on nothing more is read, and the answer in progress, if any, is the connection's last. */
  #refuse(verdict: GateVerdict, last?: Buffer): void {
    this.refused ??= verdict;
    if (this.#phase !== 'body') this.#phase = 'dropping';
    this.#socket.pause();
    if (this.answering !== undefined && !this.answering.headersSent) this.answering.shouldKeepAlive = false;
    this.#onRefused(verdict);
    if (last !== undefined) this.#toParser(last);
  }
}

const gates = new WeakMap<Socket, RequestGate>();

export function gateOf(socket: Socket): RequestGate | undefined {
  return gates.get(socket);
}

/** Before node:http's connection listener: make it read through 'data' events, not natively. */
export function readInJavaScript(socket: Socket): void {
  const handle = (socket as Socket & { _handle?: { _consumed?: boolean } })._handle;
  if (handle !== undefined && handle !== null) handle._consumed = true;
}

/** After node:http's connection listener: wraps its 'data' listener. Undefined when it is not there. */
export function installGate(socket: Socket, onRefused: (verdict: GateVerdict) => void, lane?: AtOnceLane): RequestGate | undefined {
  const listeners = socket.listeners('data') as Array<(chunk: Buffer) => void>;
  if (listeners.length !== 1) return undefined;
  const parse = listeners[0]!;
  socket.removeListener('data', parse);
  const gate = new Gate(socket, parse, onRefused, lane);
  socket.on('data', (chunk: Buffer) => gate.onData(chunk));
  gates.set(socket, gate);
  return gate;
}

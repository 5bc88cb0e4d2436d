// The at-once lane. A request whose whole head came in one read with nothing after it, and that
// the request path can answer without waiting (a refusal, a token from the cache: nearly every
// request a working pod makes), is answered from the gate (request-gate.ts) straight to the
// socket: node:http builds no request, response, header objects or events for it. Those cost
// more than everything the daemon itself does for a cache hit.
//
// The lane decides nothing of its own: the request path answers through the same steps, writers
// and report (MetadataHandler.answerAtOnce), and says no whenever it would wait (no pod yet,
// state not synced, a cache miss, a socket to attest, a proxied route). The request then goes to
// node:http as before, so the lane only ever shortens what is answerable at once.
import type { Socket } from 'node:net';
import { keepAliveLine, RawAnswer } from '../answer/raw-answer.ts';
import { readHead, type RequestHead } from './request-head.ts';

/** True when it answered; false, having written and reported nothing, when node:http must. */
export type AnswerAtOnce = (head: RequestHead, answer: RawAnswer) => boolean;

/** A connection's last head, as its bytes and as read (undefined: not the lane's to read). */
export interface LastHead {
  text: string;
  head: RequestHead | undefined;
}

export interface LaneOptions {
  /** node:http's settings, so that lane answers and idle connections are as its own. */
  keepAliveTimeoutMs: number;
  maxRequestsPerSocket: number;
  /** Hears a fault of the request path met in the lane (the daemon logs it). */
  onError?(err: unknown): void;
}

export class AtOnceLane {
  readonly options: LaneOptions;
  readonly #answer: AnswerAtOnce;
  readonly #keepAlive: string;
  #open = true;
  /** Requests answered here (podid_nmi_requests_answered_at_once_total). */
  answered = 0;

  constructor(answer: AnswerAtOnce, options: LaneOptions) {
    this.#answer = answer;
    this.options = options;
    this.#keepAlive = keepAliveLine(options.keepAliveTimeoutMs, options.maxRequestsPerSocket);
  }

  /** Draining: from now on node:http answers, each answer closing its connection. */
  close(): void {
    this.#open = false;
  }

  /**
   * `text`: one whole head, nothing after it; `served`: the lane's answers so far on this
   * connection; `last`: the connection's last head, kept by its gate.
   */
  answer(socket: Socket, text: string, served: number, last: LastHead): boolean {
    // Answers the client has not read yet fill the socket's buffer: node:http stops reading such
    // a connection until it drains, and the lane leaves it to node:http, so a client that sends
    // and never reads holds a buffer's worth, not a growing heap.
    if (!this.#open || socket.writableNeedDrain) return false;
    // An SDK asks the same way each time: the same bytes are the same head, read once.
    if (last.text !== text) {
      const read = readHead(text);
      last.text = text;
      last.head = read && { method: read.method, url: read.url, headers: read.headers, socket, close: read.close };
    }
    const head = last.head;
    if (head === undefined) return false;
    const max = this.options.maxRequestsPerSocket;
    const answer = new RawAnswer(socket, this.#keepAlive, head.close || (max > 0 && served + 1 >= max));
    try {
      if (!this.#answer(head, answer)) return false;
    } catch (err) {
      // A fault of the request path must not take the daemon down from inside a socket's read:
      // unanswered, the request goes to node:http's path; answered, the connection goes.
      this.options.onError?.(err);
      if (!answer.headersSent) return false;
      socket.destroy();
      return true;
    }
    this.answered++;
    return true;
  }
}

// One request's answer and its report, shared by every route: a refusal, a relayed answer and
// a failed fetch are written and reported the same way, and each request reaches the observer
// (metrics, logs, Events) exactly once, through `finish`.
import { refusalStatus, writeRefusal, writeUpstream, type AnswerTarget } from '../answer/respond.ts';
import { upstreamRefusal } from '../answer/upstream-refusal.ts';
import type { Reason } from '../decision/reasons.ts';
import type { RequestObserver, RequestOutcome } from '../observability/request-outcome.ts';
import type { UpstreamAnswer } from '../upstream/imds-client.ts';
import { hangUpSignal, type HangUp } from './hang-up.ts';

/** What is known of a request so far; reported once, when it is answered. */
export type Trace = { -readonly [K in keyof RequestOutcome]: RequestOutcome[K] } & { started: number };

/** Writes an upstream answer (as it came, or reshaped) and returns the status it wrote. */
export type AnswerWriter = (res: AnswerTarget, answer: UpstreamAnswer) => number;

/** node:http's ServerResponse, or the at-once lane's RawAnswer. */
export type Answerable = AnswerTarget & HangUp;

const asItCame: AnswerWriter = (res, answer) => {
  writeUpstream(res, answer);
  return answer.status;
};

export interface Reporting {
  observer: RequestObserver;
  /** Aborted on SIGTERM before the grace ends: what is still waiting gets a retryable 503. */
  stopping: AbortSignal;
}

export class RequestContext {
  readonly res: Answerable;
  readonly trace: Trace = { route: 'unknown', status: 0, reason: undefined, seconds: 0, started: performance.now() };
  readonly #o: Reporting;
  #signal: AbortSignal | undefined;

  constructor(res: Answerable, o: Reporting) {
    this.res = res;
    this.#o = o;
  }

  /** Aborted when the client hangs up or the daemon stops: work done for the request stops with it. */
  get signal(): AbortSignal {
    return (this.#signal ??= hangUpSignal(this.res, this.#o.stopping));
  }

  refuse(reason: Reason, allow?: readonly string[], retryAfterSec?: number): void {
    // Answered before the listener closes: the client reconnects to the next instance.
    if (reason === 'shutting_down') this.res.shouldKeepAlive = false;
    writeRefusal(this.res, reason, allow, retryAfterSec);
    this.trace.reason = reason;
    this.finish(refusalStatus(reason));
  }

  /** Fetches and answers; a failed fetch becomes its retryable refusal, or 503 shutting_down. */
  async relay(fetch: () => Promise<UpstreamAnswer>, write: AnswerWriter = asItCame): Promise<void> {
    const started = performance.now();
    let answer: UpstreamAnswer;
    try {
      answer = await fetch();
    } catch (err) {
      const failed = upstreamRefusal(err, this.#o.stopping.aborted);
      this.trace.upstream = { result: failed.kind, seconds: (performance.now() - started) / 1000 };
      this.trace.error = (err as Error).message;
      return this.refuse(failed.reason, undefined, failed.retryAfterSec);
    }
    this.answer(answer, started, write);
  }

  /** Answers with what the metadata service said (or had said: a cached token), fetched since `started`. */
  answer(answer: UpstreamAnswer, started: number, write: AnswerWriter = asItCame): void {
    this.trace.upstream = { result: answer.status, seconds: (performance.now() - started) / 1000, answer };
    this.finish(write(this.res, answer));
  }

  /** The one report of this request. */
  finish(status: number): void {
    this.trace.status = status;
    this.trace.seconds = (performance.now() - this.trace.started) / 1000;
    this.#o.observer.finished(this.trace);
  }
}

// The node's IMDS budget. IMDS serves 20 identity requests a second and 5 at once per VM,
// shared by every pod and node agent; beyond that it answers 429. Every token fetch goes
// through this one scheduler: at most `maxRps` starts in any sliding second and
// `maxConcurrency` in flight, fair across pods (FairQueue), retries of throttled and
// transient answers inside the same budget, and background refreshes only when no pod waits.
import { FairQueue, type EnqueueRefusal, type Queued } from './fair-queue.ts';
import { UpstreamFailure, type UpstreamAnswer } from './imds-client.ts';
import { planRetry, type RetryCause } from './retry-policy.ts';
import { systemClock, type Clock } from './clock.ts';

export interface TokenTransport {
  fetch(method: 'GET', path: string, signal?: AbortSignal): Promise<UpstreamAnswer>;
}

export type Priority = 'foreground' | 'background';

/** The one narrow hook metrics hang off. */
export interface SchedulerObserver {
  started(priority: Priority, retry: boolean, queuedMs: number): void;
  answered(status: number | UpstreamFailure['kind']): void;
  retried(cause: RetryCause): void;
}

export interface SchedulerOptions {
  transport: TokenTransport;
  maxRps?: number;
  maxConcurrency?: number;
  /** Distinct fetches waiting; beyond it 429 `upstream_busy`. */
  maxQueue?: number;
  /** Fetches one pod may have waiting; beyond it 429 `upstream_share_exceeded`. */
  maxQueuePerCaller?: number;
  /** Attempts per fetch, the first included (default: MAX_ATTEMPTS of the retry policy). */
  maxAttempts?: number;
  clock?: Clock;
  observer?: SchedulerObserver;
  /** A 429 holds every start (IMDS: the budget is the VM's). False where throttling is per client (Entra ID). */
  throttleHoldsAll?: boolean;
}

/** A client that was told to come back may be a little late; its fetch waits this much longer. */
const PIN_SLACK_MS = 10_000;
const MAX_RETRY_AFTER_SEC = 60;
const BACKGROUND = 'refresh-ahead';

/** One upstream fetch (a path), with the clients waiting for it. */
export class Ticket implements Queued {
  readonly path: string;
  priority: Priority;
  readonly promise: Promise<UpstreamAnswer>;
  notBefore: number;
  enqueuedAt: number;
  attempts = 0;
  state: 'queued' | 'running' | 'settled' = 'queued';
  /** The pods it was asked for: a retry goes back to the front of their lines. */
  readonly callers = new Set<string>();
  /** Clients awaiting it now. */
  waiters = 0;
  /** Kept, even with no waiter, until then: a client told to come back, or a refresh's useful life. */
  keepUntil: number;
  controller: AbortController | undefined;
  resolve!: (a: UpstreamAnswer) => void;
  reject!: (e: unknown) => void;

  constructor(path: string, priority: Priority, now: number, keepUntil: number) {
    this.path = path;
    this.priority = priority;
    this.notBefore = now;
    this.enqueuedAt = now;
    this.keepUntil = keepUntil;
    this.promise = new Promise((resolve, reject) => { this.resolve = resolve; this.reject = reject; });
    // Its waiters may all be gone when it settles; the rejection is theirs, not unhandled.
    this.promise.catch(() => {});
  }
}

export class UpstreamScheduler {
  readonly #transport: TokenTransport;
  readonly #maxRps: number;
  readonly #maxConcurrency: number;
  readonly #clock: Clock;
  readonly #maxAttempts: number | undefined;
  readonly #observer: SchedulerObserver | undefined;
  readonly #foreground: FairQueue<Ticket>;
  readonly #background: FairQueue<Ticket>;
  /**
   * The rate window. A start holds its slot until a second after its answer came back
   * (Infinity while at IMDS): IMDS admitted it somewhere in between, so however late the
   * request left this process or its answer was read, no second at IMDS sees more than maxRps.
   */
  #slots: Array<{ end: number }> = [];
  readonly #running = new Set<Ticket>();
  /** IMDS said 429: no start before this, for anyone (the budget is the VM's). */
  #holdUntil = 0;
  readonly #throttleHoldsAll: boolean;
  #wake: { at: number; cancel: () => void } | undefined;
  #stopped = false;

  constructor(o: SchedulerOptions) {
    this.#transport = o.transport;
    this.#maxRps = o.maxRps ?? 19;
    this.#maxConcurrency = o.maxConcurrency ?? 4;
    this.#clock = o.clock ?? systemClock;
    this.#maxAttempts = o.maxAttempts;
    this.#observer = o.observer;
    this.#throttleHoldsAll = o.throttleHoldsAll ?? true;
    const maxQueue = o.maxQueue ?? 1024;
    this.#foreground = new FairQueue(maxQueue, o.maxQueuePerCaller ?? 16);
    this.#background = new FairQueue(maxQueue, maxQueue);
  }

  get queued(): { foreground: number; background: number } {
    return { foreground: this.#foreground.size, background: this.#background.size };
  }

  get inFlight(): number {
    return this.#running.size;
  }

  /** A new fetch of `path` for `caller`, or why it cannot be queued. */
  submit(path: string, caller: string, priority: Priority = 'foreground', keepUntil = 0): Ticket | EnqueueRefusal {
    if (this.#stopped) return 'full';
    const ticket = new Ticket(path, priority, this.#clock.now(), keepUntil);
    const line = priority === 'foreground' ? caller : BACKGROUND;
    const refused = this.#queue(ticket).add(line, ticket);
    if (refused !== undefined) return refused;
    ticket.callers.add(line);
    // A pod's fetch starts once its client waits for it (wait()), so it is never taken for abandoned.
    if (priority === 'background') this.#pump();
    return ticket;
  }

  /**
   * `caller` waits for an existing fetch too: it is queued in that caller's line as well, so a
   * fetch first asked for by a pod with a long line moves up when another pod needs it.
   */
  join(ticket: Ticket, caller: string): void {
    if (ticket.priority === 'background') {
      // A pod now waits for what was a background refresh: from now on it is that pod's fetch.
      if (ticket.state === 'queued') {
        this.#background.remove(ticket);
        this.#foreground.add(caller, ticket, true);
      }
      ticket.callers.clear();
      ticket.priority = 'foreground';
      ticket.callers.add(caller);
      this.#pump();
      return;
    }
    // Waiting for a fetch already queued costs the budget nothing: a pod whose line is full
    // still waits for it, only without moving it up.
    if (ticket.state === 'queued' && this.#foreground.add(caller, ticket) !== undefined) return;
    ticket.callers.add(caller);
  }

  /**
   * Waits at most `waitMs` for the ticket. After that the client is told when to come back
   * (UpstreamFailure 'queued' with a Retry-After from the ticket's place) and the fetch is kept,
   * so the retry finds the token in the cache. A client that hangs up leaves; the fetch is
   * dropped when nobody waits for it or is coming back.
   */
  wait(ticket: Ticket, signal: AbortSignal | undefined, waitMs: number): Promise<UpstreamAnswer> {
    ticket.waiters++;
    return new Promise<UpstreamAnswer>((resolve, reject) => {
      let done = false;
      const finish = (): void => {
        done = true;
        ticket.waiters--;
        cancelTimer();
        signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = (): void => {
        if (done) return;
        finish();
        if (ticket.waiters === 0 && this.#clock.now() > ticket.keepUntil) this.cancel(ticket);
        reject(new UpstreamFailure('aborted', 'client went away'));
      };
      const cancelTimer = this.#clock.timer(() => {
        if (done) return;
        finish();
        const retryAfter = this.retryAfterSec(ticket);
        ticket.keepUntil = Math.max(ticket.keepUntil, this.#clock.now() + retryAfter * 1000 + PIN_SLACK_MS);
        reject(new UpstreamFailure('queued', 'still waiting for the metadata service', { retryAfterSec: retryAfter }));
      }, waitMs);
      if (signal?.aborted === true) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#pump();
      ticket.promise.then((a) => { if (!done) { finish(); resolve(a); } }, (e: unknown) => { if (!done) { finish(); reject(e); } });
    });
  }

  /** Drops a fetch: out of the queue, or its request aborted. */
  cancel(ticket: Ticket): void {
    if (ticket.state === 'settled') return;
    if (ticket.state === 'running') {
      ticket.controller?.abort();
      return;
    }
    this.#foreground.remove(ticket);
    this.#background.remove(ticket);
    this.#settle(ticket, new UpstreamFailure('aborted', 'nobody waits for this fetch'));
  }

  /**
   * Seconds until the ticket's answer is likely in: the queue ahead of it at the start rate,
   * after any hold and backoff, plus a second for the answer. Different places, different values.
   */
  retryAfterSec(ticket: Ticket): number {
    if (ticket.state !== 'queued') return 1;
    const ahead = ticket.priority === 'foreground'
      ? this.#foreground.ahead(ticket) ?? 0
      : this.#foreground.size + (this.#background.ahead(ticket) ?? 0);
    return this.#etaSec(Math.max(ticket.notBefore, this.#firstStartEstimate()), ahead);
  }

  /** For a pod over its share: when the first of its queued fetches should start. */
  retryAfterForCaller(caller: string): number {
    return this.#etaSec(this.#firstStartEstimate(), this.#foreground.aheadOfCaller(caller) ?? 0);
  }

  /** For a full queue: when all of it should have started. */
  retryAfterFull(): number {
    return this.#etaSec(this.#firstStartEstimate(), this.#foreground.size);
  }

  /** Fails everything still queued, and stops starting anything (shutdown). */
  stop(): void {
    this.#stopped = true;
    this.#wake?.cancel();
    this.#wake = undefined;
    for (const q of [this.#foreground, this.#background]) {
      let t: Ticket | undefined;
      while ((t = q.take(Number.POSITIVE_INFINITY)) !== undefined) this.#settle(t, new UpstreamFailure('aborted', 'shutting down'));
    }
    for (const t of this.#running) t.controller?.abort();
  }

  #queue(ticket: Ticket): FairQueue<Ticket> {
    return ticket.priority === 'foreground' ? this.#foreground : this.#background;
  }

  /** As #firstStartAt, with a second for answers still out. */
  #firstStartEstimate(): number {
    const at = this.#firstStartAt();
    return Number.isFinite(at) ? at : this.#clock.now() + 1000;
  }

  #etaSec(from: number, ahead: number): number {
    const now = this.#clock.now();
    const startsAt = Math.max(now, from) + (ahead * 1000) / this.#maxRps;
    return Math.min(MAX_RETRY_AFTER_SEC, Math.ceil((startsAt - now) / 1000) + 1);
  }

  /** The earliest time the budget allows another start (Infinity: when an answer comes back). */
  #firstStartAt(): number {
    const now = this.#clock.now();
    this.#slots = this.#slots.filter((s) => s.end > now);
    let windowFree = now;
    if (this.#slots.length >= this.#maxRps) {
      const ends = this.#slots.map((s) => s.end).sort((a, b) => a - b);
      windowFree = ends[this.#slots.length - this.#maxRps]!;
    }
    return Math.max(now, this.#holdUntil, windowFree);
  }

  #pump(): void {
    if (this.#stopped) return;
    while (this.#running.size < this.#maxConcurrency) {
      const now = this.#clock.now();
      const at = this.#firstStartAt();
      // Infinity: every slot waits for an answer, and an answer pumps.
      if (at > now) return Number.isFinite(at) ? this.#wakeAt(at) : undefined;
      const ticket = this.#next(now);
      if (ticket === undefined) {
        // Nothing due now: wake for the first backoff that ends.
        const due = Math.min(this.#foreground.nextDue() ?? Infinity, this.#background.nextDue() ?? Infinity);
        if (Number.isFinite(due)) this.#wakeAt(due);
        return;
      }
      this.#start(ticket, now);
    }
  }

  /** Pods first, round robin; a refresh only when no pod's fetch is due. Abandoned fetches are dropped here. */
  #next(now: number): Ticket | undefined {
    for (const q of [this.#foreground, this.#background]) {
      let t: Ticket | undefined;
      while ((t = q.take(now)) !== undefined) {
        if (t.waiters > 0 || now <= t.keepUntil) return t;
        this.#settle(t, new UpstreamFailure('aborted', 'nobody waits for this fetch'));
      }
    }
    return undefined;
  }

  #wakeAt(at: number): void {
    if (this.#wake !== undefined && this.#wake.at <= at) return;
    this.#wake?.cancel();
    const cancel = this.#clock.timer(() => {
      this.#wake = undefined;
      this.#pump();
    }, at - this.#clock.now());
    this.#wake = { at, cancel };
  }

  #start(ticket: Ticket, now: number): void {
    const slot = { end: Infinity };
    this.#slots.push(slot);
    this.#running.add(ticket);
    ticket.state = 'running';
    ticket.attempts++;
    ticket.controller = new AbortController();
    this.#observer?.started(ticket.priority, ticket.attempts > 1, now - ticket.enqueuedAt);
    const finished = (result: UpstreamAnswer | UpstreamFailure): void => {
      slot.end = this.#clock.now() + 1000;
      this.#finished(ticket, result);
    };
    this.#transport.fetch('GET', ticket.path, ticket.controller.signal).then(
      finished,
      (err: unknown) => finished(err instanceof UpstreamFailure ? err : new UpstreamFailure('unreachable', String(err), { cause: err })),
    );
  }

  #finished(ticket: Ticket, result: UpstreamAnswer | UpstreamFailure): void {
    this.#running.delete(ticket);
    const now = this.#clock.now();
    this.#observer?.answered(result instanceof UpstreamFailure ? result.kind : result.status);
    const aborted = result instanceof UpstreamFailure && result.kind === 'aborted';
    const plan = aborted || this.#stopped ? undefined : planRetry(result, ticket.attempts, now, this.#maxAttempts);
    const wanted = ticket.waiters > 0 || now + (plan?.delayMs ?? 0) <= ticket.keepUntil;
    if (plan !== undefined && wanted) {
      this.#observer?.retried(plan.cause);
      // IMDS's budget is the whole VM's: when it throttles, nobody here starts until it allows.
      if (plan.cause === '429' && this.#throttleHoldsAll) this.#holdUntil = Math.max(this.#holdUntil, now + plan.delayMs);
      ticket.state = 'queued';
      ticket.notBefore = now + plan.delayMs;
      ticket.enqueuedAt = now;
      // A retry keeps its place: first in the lines of the pods it is for.
      for (const caller of ticket.callers) this.#queue(ticket).add(caller, ticket, true);
      this.#pump();
      return;
    }
    if (result instanceof UpstreamFailure) this.#settle(ticket, result);
    else this.#settle(ticket, undefined, result);
    this.#pump();
  }

  #settle(ticket: Ticket, err: UpstreamFailure | undefined, answer?: UpstreamAnswer): void {
    ticket.state = 'settled';
    if (err !== undefined) ticket.reject(err);
    else ticket.resolve(answer!);
  }
}


/** A refusal to queue, as the failure the handler answers with (429 and when to come back). */
export function refusedFailure(scheduler: UpstreamScheduler, refusal: EnqueueRefusal, caller: string): UpstreamFailure {
  return refusal === 'caller_full'
    ? new UpstreamFailure('share_exceeded', 'this pod has its share of the IMDS queue waiting', { retryAfterSec: scheduler.retryAfterForCaller(caller) })
    : new UpstreamFailure('busy', 'too many requests waiting for IMDS', { retryAfterSec: scheduler.retryAfterFull() });
}

/** One paced fetch with no cache (`--token-cache=false`): queued, bounded wait, fair. */
export function fetchPaced(scheduler: UpstreamScheduler, path: string, caller: string, signal: AbortSignal | undefined, waitMs: number): Promise<UpstreamAnswer> {
  const ticket = scheduler.submit(path, caller);
  if (typeof ticket === 'string') return Promise.reject(refusedFailure(scheduler, ticket, caller));
  return scheduler.wait(ticket, signal, waitMs);
}

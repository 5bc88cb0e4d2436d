import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { isIPv6 } from 'node:net';
import type { EmulatorOptions, Fault, ImdsEmulator, RecordedRequest } from './types.ts';
import { parseQuery, splitTarget } from './query.ts';
import { isLoopbackHost } from '../runtime/loopback.ts';
import { ErrorText, sendError, sendJson, sendRaw, JSON_CONTENT_TYPE } from './imds-responses.ts';
import { selectIdentity } from './identity-selection.ts';
import { TokenRateLimiter } from './rate-limiter.ts';
import { readBody } from '../listener/read-body.ts';
import { tokenResponseBody } from './fake-token.ts';
import {
  API_VERSIONS,
  DEFAULT_TENANT_ID,
  LOADBALANCER_DOCUMENT,
  asText,
  attestedDocument,
  instanceDocument,
  lookupSubpath,
} from './instance-document.ts';

const MAX_RECORDED = 10_000;
const MAX_POST_BODY_BYTES = 64 * 1024;
const DEFAULT_RATE_LIMIT = { perSecond: 20, concurrent: 5 };

type RouteName = 'token' | 'instance' | 'attested' | 'identityInfo' | 'scheduledEvents' | 'loadbalancer' | 'versions';

interface Route {
  name: RouteName;
  methods: readonly string[];
  needsApiVersion: boolean;
  /** Segments below /metadata/instance, for subpath lookups. */
  subpath: string[];
}

/** Everything after the case-insensitive `/metadata` segment; undefined when outside it. */
function metadataRemainder(path: string): string | undefined {
  const m = /^\/metadata(?=\/|$)/i.exec(path);
  if (!m) return undefined;
  const rest = path.slice(m[0].length);
  // One trailing slash is tolerated: msal-node sends `/token/` with a custom authority host.
  return rest.length > 1 && rest.endsWith('/') ? rest.slice(0, -1) : rest;
}

function resolveRoute(path: string): Route | undefined {
  const rest = metadataRemainder(path);
  if (rest === undefined) return undefined;
  const get = ['GET'] as const;
  switch (rest) {
    case '/identity/oauth2/token':
      return { name: 'token', methods: get, needsApiVersion: true, subpath: [] };
    case '/attested/document':
      return { name: 'attested', methods: get, needsApiVersion: true, subpath: [] };
    case '/identity/info':
      return { name: 'identityInfo', methods: get, needsApiVersion: true, subpath: [] };
    case '/scheduledevents':
      return { name: 'scheduledEvents', methods: ['GET', 'POST'], needsApiVersion: true, subpath: [] };
    case '/loadbalancer':
      return { name: 'loadbalancer', methods: get, needsApiVersion: true, subpath: [] };
    case '/versions':
      return { name: 'versions', methods: get, needsApiVersion: false, subpath: [] };
  }
  if (rest === '/instance' || rest.startsWith('/instance/')) {
    const segments = rest.slice('/instance'.length).split('/').slice(1);
    // Empty segments (`//`) are a classic path trick: never resolve them.
    if (segments.some((s) => s === '')) return undefined;
    return { name: 'instance', methods: get, needsApiVersion: true, subpath: segments };
  }
  return undefined;
}

function urlHost(host: string): string {
  return isIPv6(host) ? `[${host}]` : host;
}

export async function startImdsEmulator(opts: EmulatorOptions): Promise<ImdsEmulator> {
  const host = opts.host ?? '127.0.0.1';
  if (!opts.allowNonLoopback && !isLoopbackHost(host)) {
    throw new Error(`imds emulator: refusing to listen on non-loopback host ${host} (set allowNonLoopback)`);
  }
  const now = opts.now ?? Date.now;
  const identities = [...opts.identities];
  const systemAssigned = opts.systemAssigned;
  const tenantId = opts.tenantId ?? DEFAULT_TENANT_ID;
  const tokenLatencyMs = opts.tokenLatencyMs ?? 0;
  const limiter = new TokenRateLimiter(opts.rateLimit === undefined ? DEFAULT_RATE_LIMIT : opts.rateLimit, now);

  const requests: RecordedRequest[] = [];
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let fault: Fault | undefined;
  let faultRemaining: number | undefined;
  let tokenCounter = 0;

  function takeFault(): Fault | undefined {
    const f = fault;
    if (f === undefined) return undefined;
    if (faultRemaining !== undefined) {
      faultRemaining--;
      if (faultRemaining <= 0) {
        fault = undefined;
        faultRemaining = undefined;
      }
    }
    return f;
  }

  function later(ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      timers.delete(timer);
      fn();
    }, ms);
    timers.add(timer);
  }

  function record(req: IncomingMessage): void {
    requests.push({
      method: req.method ?? '',
      url: req.url ?? '',
      headers: { ...req.headers },
      remoteAddress: req.socket.remoteAddress ?? '',
      at: now(),
    });
    if (requests.length > MAX_RECORDED) requests.splice(0, requests.length - MAX_RECORDED);
  }

  function handleToken(req: IncomingMessage, res: ServerResponse, params: Map<string, string>): void {
    const resource = params.get('resource') ?? '';
    if (resource === '') return sendError(res, 400, 'invalid_request', ErrorText.resourceMissing);
    const selection = selectIdentity(params, identities, systemAssigned);
    if (!selection.ok) return sendError(res, 400, 'invalid_request', selection.description);

    const admission = limiter.tryAdmit();
    if (!admission.admitted) {
      const text = admission.reason === 'rate' ? ErrorText.tooManyRequests : ErrorText.tooManyConcurrent;
      return sendError(res, 429, 'too_many_requests', text);
    }
    // 'close' fires both after a normal answer and when the client gives up early.
    res.on('close', admission.release);

    const f = takeFault();
    if (f?.kind === 'reset') {
      admission.release();
      req.socket.resetAndDestroy();
      return;
    }
    if (f?.kind === 'status') {
      const body = f.body ?? JSON.stringify({ error: 'emulated_fault', error_description: `Injected status ${f.status}` });
      return sendRaw(res, f.status, body, { 'Content-Type': JSON_CONTENT_TYPE, ...f.headers });
    }
    const answer = (): void => {
      if (res.destroyed || res.headersSent) return;
      tokenCounter++;
      sendJson(res, 200, tokenResponseBody(selection.identity, resource, now(), tokenCounter));
    };
    const delay = f?.kind === 'slow' ? f.delayMs : tokenLatencyMs;
    if (delay > 0) later(delay, answer);
    else answer();
  }

  function handleInstance(res: ServerResponse, route: Route, params: Map<string, string>): void {
    const lookup = lookupSubpath(instanceDocument(tenantId, identities), route.subpath);
    if (!lookup.found) return sendError(res, 404, 'not_found', ErrorText.notFound);
    if (params.get('format') === 'text') {
      return sendRaw(res, 200, asText(lookup.value), { 'Content-Type': 'text/plain; charset=utf-8' });
    }
    sendJson(res, 200, lookup.value);
  }

  async function handleScheduledEvents(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method === 'GET') return sendJson(res, 200, { DocumentIncarnation: 1, Events: [] });
    const body = await readBody(req, MAX_POST_BODY_BYTES);
    if (body === undefined) return sendError(res, 413, 'invalid_request', 'Request body too large');
    try {
      JSON.parse(body.toString('utf8'));
    } catch {
      return sendError(res, 400, 'invalid_request', 'Request body is not valid JSON');
    }
    sendRaw(res, 200, '', {});
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    record(req);
    const headers = req.headers;
    if (typeof headers['metadata'] !== 'string' || headers['metadata'].trim() !== 'true') {
      return sendError(res, 400, 'invalid_request', ErrorText.metadataHeader);
    }
    if (headers['x-forwarded-for'] !== undefined) {
      return sendError(res, 400, 'invalid_request', ErrorText.forwardedFor);
    }
    const target = req.url ?? '';
    if (!target.startsWith('/')) return sendError(res, 400, 'invalid_request', ErrorText.absoluteTarget);
    const { path, rawQuery } = splitTarget(target);
    const route = resolveRoute(path);
    if (!route) return sendError(res, 404, 'not_found', ErrorText.notFound);
    const method = req.method ?? '';
    if (!route.methods.includes(method)) {
      return sendError(res, 405, 'method_not_allowed', ErrorText.methodNotAllowed(method), {
        Allow: route.methods.join(', '),
      });
    }
    const parsed = parseQuery(rawQuery);
    if (!parsed.ok) {
      const text = parsed.reason === 'duplicate' ? ErrorText.duplicateParameter(parsed.name) : ErrorText.malformedQuery;
      return sendError(res, 400, 'invalid_request', text);
    }
    const params = parsed.params;
    if (route.needsApiVersion && (params.get('api-version') ?? '') === '') {
      return sendError(res, 400, 'invalid_request', ErrorText.apiVersionMissing);
    }
    switch (route.name) {
      case 'token':
        return handleToken(req, res, params);
      case 'instance':
        return handleInstance(res, route, params);
      case 'attested':
        return sendJson(res, 200, attestedDocument(params.get('nonce')));
      case 'identityInfo':
        return sendJson(res, 200, { tenantId });
      case 'scheduledEvents':
        return handleScheduledEvents(req, res);
      case 'loadbalancer':
        return sendJson(res, 200, LOADBALANCER_DOCUMENT);
      case 'versions':
        return sendJson(res, 200, { apiVersions: API_VERSIONS });
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) sendError(res, 500, 'internal_error', 'Emulator error');
      else res.destroy();
    });
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: opts.port ?? 0 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('imds emulator: no TCP address');
  const port = address.port;

  let closing: Promise<void> | undefined;
  return {
    url: `http://${urlHost(host)}:${port}`,
    host,
    port,
    requests,
    setFault(f: Fault | undefined, faultOpts?: { times?: number }): void {
      fault = f;
      faultRemaining = f === undefined ? undefined : faultOpts?.times;
      if (faultRemaining !== undefined && faultRemaining <= 0) fault = undefined;
    },
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        timers.clear();
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
        server.closeAllConnections();
      });
      return closing;
    },
  };
}


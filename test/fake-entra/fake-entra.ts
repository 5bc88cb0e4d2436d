// A fake Entra ID token endpoint (v2, client credentials) on loopback, checking what Entra
// checks and answering Entra's error shape and codes:
// - tenant exists (AADSTS90002), application exists in it (700016), grant type and scope;
// - client secret (7000215);
// - certificate assertion: thumbprint (x5t / x5t#S256) registered, RS256/PS256 signature,
//   audience the token endpoint, iss = sub = client id, time range (700027, 700024);
// - federated assertion: an issuer of a federated credential, signature by that issuer's JWKS,
//   then audience (700212), subject (700213), expiry (700024); no credential at all (70021),
//   issuer unknown (700211);
// - throttling: 429 with Retry-After on demand.
// Secrets and assertions are never stored: tests read only what was decided.
import { createHash, createPublicKey, randomUUID, verify, X509Certificate, constants, type JsonWebKey, type KeyObject } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

export interface FederatedCredential {
  readonly issuer: string;
  readonly subject: string;
  readonly audience?: string;
}

export interface FakeApp {
  readonly tenant: string;
  secrets?: string[];
  /** DER of certificates whose private keys may sign assertions. */
  certificates?: Buffer[];
  federated?: FederatedCredential[];
}

export interface EntraCall {
  readonly tenant: string;
  readonly clientID: string;
  /** 'secret', 'certificate', 'federated' or 'none' */
  readonly credential: string;
  readonly scope: string;
  readonly status: number;
  readonly code: number | undefined;
  /** Federated: the assertion's subject. */
  readonly subject?: string;
}

export class FakeEntra {
  readonly tenants = new Set<string>();
  readonly apps = new Map<string, FakeApp>();
  readonly calls: EntraCall[] = [];
  readonly #issuers = new Map<string, Map<string, KeyObject>>();
  #throttle: { remaining: number; retryAfterSec: number } | undefined;
  /** Lifetime of issued tokens. */
  tokenSeconds = 3599;
  /** Each answer waits this long: a slow Entra, for tests of queues and shares. */
  delayMs = 0;
  /** Requests being answered now, and the most at once. */
  inFlight = 0;
  peakInFlight = 0;
  #server: Server | undefined;
  #host = '127.0.0.1';
  #port = 0;

  static async start(host = '127.0.0.1'): Promise<FakeEntra> {
    const e = new FakeEntra();
    e.#host = host;
    const server = createServer((req, res) => void e.#handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port: 0, host }, () => resolve());
    });
    e.#server = server;
    e.#port = (server.address() as { port: number }).port;
    return e;
  }

  /** The authority host, as --authority-host or spec.adEndpoint takes it. */
  get authority(): string {
    return `http://${this.#host}:${this.#port}/`;
  }

  tokenEndpoint(tenant: string): string {
    return `${this.authority}${tenant}/oauth2/v2.0/token`;
  }

  addApp(clientID: string, app: FakeApp): void {
    this.tenants.add(app.tenant);
    this.apps.set(clientID, app);
  }

  /** Trusts a Kubernetes service-account issuer: its JWKS (as /openid/v1/jwks serves it). */
  trustIssuer(issuer: string, jwks: { keys: Array<Record<string, unknown>> }): void {
    const keys = new Map<string, KeyObject>();
    for (const k of jwks.keys) keys.set(String(k.kid), createPublicKey({ key: k as JsonWebKey, format: 'jwk' }));
    this.#issuers.set(issuer, keys);
  }

  /** The next `count` requests get 429 with Retry-After. */
  throttle(count: number, retryAfterSec: number): void {
    this.#throttle = { remaining: count, retryAfterSec };
  }

  callsFor(clientID: string): EntraCall[] {
    return this.calls.filter((c) => c.clientID === clientID);
  }

  close(): Promise<void> {
    const s = this.#server;
    this.#server = undefined;
    if (s === undefined) return Promise.resolve();
    s.closeAllConnections();
    return new Promise((resolve) => s.close(() => resolve()));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    this.inFlight++;
    this.peakInFlight = Math.max(this.peakInFlight, this.inFlight);
    res.on('close', () => { this.inFlight--; });
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    const m = /^\/([^/]+)\/oauth2\/v2\.0\/token$/.exec(new URL(req.url ?? '/', 'http://x').pathname);
    if (req.method !== 'POST' || m === null) return json(res, 404, { error: 'not_found' });
    const tenant = decodeURIComponent(m[1]!);
    const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
    const clientID = form.get('client_id') ?? '';
    const scope = form.get('scope') ?? '';
    const credential = form.has('client_secret') ? 'secret' : form.has('client_assertion') ? 'assertion' : 'none';
    const call = (status: number, code: number | undefined, kind = credential, subject?: string): void => {
      this.calls.push({ tenant, clientID, credential: kind, scope, status, code, ...(subject === undefined ? {} : { subject }) });
    };
    const fail = (status: number, error: string, code: number, text: string, kind?: string, subject?: string): void => {
      call(status, code, kind, subject);
      aadError(res, status, error, code, text);
    };
    if (this.#throttle !== undefined && this.#throttle.remaining > 0) {
      this.#throttle.remaining--;
      call(429, 90055);
      res.setHeader('Retry-After', String(this.#throttle.retryAfterSec));
      return aadError(res, 429, 'temporarily_unavailable', 90055, 'The request is throttled temporarily. Please try after the value specified in the Retry-After header.');
    }
    if (!this.tenants.has(tenant)) return fail(400, 'invalid_request', 90002, `Tenant '${tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.`);
    if (form.get('grant_type') !== 'client_credentials') return fail(400, 'unsupported_grant_type', 70003, 'The app requested an unsupported grant type.');
    if (!scope.endsWith('/.default') || scope.includes(' ')) return fail(400, 'invalid_scope', 1002012, `The provided value for scope ${scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`);
    const app = this.apps.get(clientID);
    if (app === undefined || app.tenant !== tenant) {
      return fail(400, 'unauthorized_client', 700016, `Application with identifier '${clientID}' was not found in the directory '${tenant}'.`);
    }
    if (credential === 'secret') {
      if (!(app.secrets ?? []).includes(form.get('client_secret')!)) {
        return fail(401, 'invalid_client', 7000215, 'Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app \'' + clientID + '\'.', 'secret');
      }
      return this.#issue(res, tenant, clientID, scope, 'secret', call);
    }
    if (credential === 'none') return fail(401, 'invalid_client', 7000218, 'The request body must contain the following parameter: \'client_assertion\' or \'client_secret\'.');
    if (form.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') {
      return fail(400, 'invalid_request', 50027, 'Invalid client_assertion_type.');
    }
    const jwt = parseJwt(form.get('client_assertion')!);
    if (jwt === undefined) return fail(401, 'invalid_client', 50027, 'JWT token is invalid or malformed.');
    const now = Math.floor(Date.now() / 1000);
    const iss = String(jwt.claims.iss ?? '');
    const issuerKeys = this.#issuers.get(iss);
    if (issuerKeys !== undefined || (app.federated ?? []).some((f) => f.issuer === iss)) {
      // A federated assertion: the issuer must be one of the app's federated credentials.
      const subject = String(jwt.claims.sub ?? '');
      const creds = app.federated ?? [];
      if (creds.length === 0) return fail(400, 'invalid_request', 70021, 'No matching federated identity record found for presented assertion. Assertion Issuer: \'' + iss + '\'. Assertion Subject: \'' + subject + '\'.', 'federated', subject);
      const forIssuer = creds.filter((f) => f.issuer === iss);
      if (forIssuer.length === 0) return fail(400, 'invalid_request', 700211, `No matching federated identity record found for presented assertion issuer '${iss}'.`, 'federated', subject);
      const key = issuerKeys?.get(String(jwt.header.kid ?? ''));
      if (key === undefined || jwt.header.alg !== 'RS256' || !verify('sha256', Buffer.from(jwt.signedPart), key, jwt.signature)) {
        return fail(401, 'invalid_client', 700027, 'Client assertion failed signature validation.', 'federated', subject);
      }
      const auds = Array.isArray(jwt.claims.aud) ? jwt.claims.aud.map(String) : [String(jwt.claims.aud)];
      const forAudience = forIssuer.filter((f) => auds.includes(f.audience ?? 'api://AzureADTokenExchange'));
      if (forAudience.length === 0) return fail(400, 'invalid_request', 700212, `No matching federated identity record found for presented assertion audience '${auds.join(',')}'.`, 'federated', subject);
      if (!forAudience.some((f) => f.subject === subject)) return fail(400, 'invalid_request', 700213, `No matching federated identity record found for presented assertion subject '${subject}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion.`, 'federated', subject);
      if (typeof jwt.claims.exp !== 'number' || jwt.claims.exp <= now) return fail(400, 'invalid_request', 700024, 'Client assertion is not within its valid time range.', 'federated', subject);
      return this.#issue(res, tenant, clientID, scope, 'federated', call, subject);
    }
    // A certificate assertion.
    const x5t = jwt.header.x5t;
    const x5tS256 = jwt.header['x5t#S256'];
    const cert = (app.certificates ?? []).find((der) => createHash('sha1').update(der).digest('base64url') === x5t
      || createHash('sha256').update(der).digest('base64url') === x5tS256);
    if (cert === undefined) return fail(401, 'invalid_client', 700027, `The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '${String(x5t ?? x5tS256 ?? '')}']`, 'certificate');
    const pub = new X509Certificate(cert).publicKey;
    const ok = jwt.header.alg === 'RS256' ? verify('sha256', Buffer.from(jwt.signedPart), pub, jwt.signature)
      : jwt.header.alg === 'PS256' ? verify('sha256', Buffer.from(jwt.signedPart), { key: pub, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, jwt.signature)
        : false;
    if (!ok) return fail(401, 'invalid_client', 700027, 'Client assertion failed signature validation.', 'certificate');
    if (jwt.claims.aud !== this.tokenEndpoint(tenant)) return fail(401, 'invalid_client', 700027, `Client assertion audience claim does not match Realm issuer. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .`, 'certificate');
    if (jwt.claims.iss !== clientID || jwt.claims.sub !== clientID) return fail(401, 'invalid_client', 700023, 'Client assertion issuer and subject must be the client id.', 'certificate');
    if (typeof jwt.claims.jti !== 'string' || jwt.claims.jti === '') return fail(401, 'invalid_client', 700027, 'Client assertion has no jti.', 'certificate');
    if (typeof jwt.claims.exp !== 'number' || jwt.claims.exp <= now || typeof jwt.claims.nbf !== 'number' || jwt.claims.nbf > now + 300) {
      return fail(400, 'invalid_client', 700024, 'Client assertion is not within its valid time range.', 'certificate');
    }
    return this.#issue(res, tenant, clientID, scope, 'certificate', call);
  }

  #issue(res: ServerResponse, tenant: string, clientID: string, scope: string, kind: string, call: (s: number, c: number | undefined, k?: string, sub?: string) => void, subject?: string): void {
    call(200, undefined, kind, subject);
    const now = Math.floor(Date.now() / 1000);
    const payload = { aud: scope.slice(0, -'/.default'.length), appid: clientID, tid: tenant, iat: now, exp: now + this.tokenSeconds, via: kind, jti: randomUUID() };
    const access = `eyJ0eXAiOiJKV1QifQ.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.fake`;
    json(res, 200, { token_type: 'Bearer', expires_in: this.tokenSeconds, ext_expires_in: this.tokenSeconds, access_token: access });
  }
}

function parseJwt(text: string): { header: Record<string, unknown>; claims: Record<string, unknown>; signedPart: string; signature: Buffer } | undefined {
  const parts = text.split('.');
  if (parts.length !== 3) return undefined;
  try {
    return {
      header: JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8')) as Record<string, unknown>,
      claims: JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as Record<string, unknown>,
      signedPart: `${parts[0]}.${parts[1]}`,
      signature: Buffer.from(parts[2]!, 'base64url'),
    };
  } catch {
    return undefined;
  }
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Entra's error shape: the AADSTS code leads the description, followed by trace and correlation ids. */
function aadError(res: ServerResponse, status: number, error: string, code: number, text: string): void {
  const trace = randomUUID();
  const correlation = randomUUID();
  const timestamp = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  json(res, status, {
    error, error_description: `AADSTS${code}: ${text} Trace ID: ${trace} Correlation ID: ${correlation} Timestamp: ${timestamp}`,
    error_codes: [code], timestamp, trace_id: trace, correlation_id: correlation, error_uri: `https://login.microsoftonline.com/error?code=${code}`,
  });
}

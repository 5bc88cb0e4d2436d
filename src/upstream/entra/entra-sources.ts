// The three Entra token sources behind the one TokenSource interface: each gets its credential
// (a Secret's client secret; a Secret's PKCS#12 certificate, signed into an assertion; the pod's
// service-account token) and asks Entra through the one EntraClient. What a source finds wrong
// on its side (a Secret missing, a key absent, a TokenRequest refused) is answered as a refusal
// naming what it found; Entra's own refusals are relayed (entra-client.ts).
import { createHash } from 'node:crypto';
import type { Clock } from '../clock.ts';
import type { UpstreamAnswer } from '../imds-client.ts';
import type { EntraOrder, TokenSource } from '../token-source.ts';
import { clientAssertion } from './client-assertion.ts';
import { tokenEndpoint, type ClientCredential, type EntraClient } from './entra-client.ts';
import { readPkcs12, Pkcs12Error, type Pkcs12Contents } from './pkcs12.ts';
import { clientSecretOf, type SecretData, type SecretStore } from './secrets.ts';
import type { ServiceAccountTokens } from './service-account-tokens.ts';
import { sourceRefusal, SourceRefusal } from './source-refusal.ts';

type Order<K extends EntraOrder['source']['kind']> = EntraOrder & { source: Extract<EntraOrder['source'], { kind: K }> };

/** Entra's codes that mean "the credential is not (or no longer) right": the Secret is read again next time. */
const STALE_CREDENTIAL_CODES = new Set([7000215, 7000222, 700027, 700024, 7000274]);

async function mint(client: EntraClient, order: EntraOrder, credential: () => Promise<ClientCredential>, signal: AbortSignal): Promise<UpstreamAnswer> {
  // The resource becomes the OAuth scope, where whitespace separates scopes: a pod could ask Entra
  // for more than the one resource it named. Refused before any credential is read.
  if (/\s/.test(order.resource)) return sourceRefusal('parameter_invalid', 'the resource holds whitespace, which would name more than one scope at Entra ID');
  let cred: ClientCredential;
  try {
    cred = await credential();
  } catch (err) {
    if (err instanceof SourceRefusal) return err.answer();
    throw err;
  }
  return client.token(order.source, order.resource, cred, signal);
}

function staleCredential(answer: UpstreamAnswer): boolean {
  if (answer.status !== 400 && answer.status !== 401) return false;
  try {
    const codes = (JSON.parse(answer.body.toString('utf8')) as { error_codes?: unknown }).error_codes;
    return Array.isArray(codes) && codes.some((c) => STALE_CREDENTIAL_CODES.has(Number(c)));
  } catch {
    return false;
  }
}

export class ClientSecretSource implements TokenSource<Order<'client-secret'>> {
  readonly client: EntraClient;
  readonly secrets: SecretStore;

  constructor(client: EntraClient, secrets: SecretStore) {
    this.client = client;
    this.secrets = secrets;
  }

  async fetch(order: Order<'client-secret'>, signal: AbortSignal): Promise<UpstreamAnswer> {
    const ref = order.source.secret;
    let used = '';
    const secret = async (): Promise<ClientCredential> => ({ client_secret: used = clientSecretOf(await this.secrets.read(ref), ref) });
    const answer = await mint(this.client, order, secret, signal);
    if (!staleCredential(answer)) return answer;
    // Entra says the secret is wrong: maybe it was rotated since it was read. Read it again,
    // and try once more only if it changed.
    this.secrets.forget(ref);
    const before = used;
    try {
      await secret();
    } catch {
      return answer;
    }
    return used === before ? answer : mint(this.client, order, secret, signal);
  }
}

export class ClientCertificateSource implements TokenSource<Order<'client-certificate'>> {
  /** Parsed certificates by Secret and content digest: the KDF runs once per Secret version. */
  readonly #parsed = new Map<string, Pkcs12Contents>();

  readonly client: EntraClient;
  readonly secrets: SecretStore;
  readonly clock: Clock;

  constructor(client: EntraClient, secrets: SecretStore, clock: Clock) {
    this.client = client;
    this.secrets = secrets;
    this.clock = clock;
  }

  async fetch(order: Order<'client-certificate'>, signal: AbortSignal): Promise<UpstreamAnswer> {
    const ref = order.source.secret;
    const answer = await mint(this.client, order, async () => {
      const contents = this.#contents(await this.secrets.read(ref), `${ref.namespace}/${ref.name}`);
      return {
        client_assertion: clientAssertion({
          key: contents.key, certificateDer: contents.certificateDer, clientID: order.source.clientID,
          audience: tokenEndpoint(order.source), nowMs: this.clock.now(),
        }),
      };
    }, signal);
    if (staleCredential(answer)) this.secrets.forget(ref);
    return answer;
  }

  #contents(data: SecretData, name: string): Pkcs12Contents {
    const pfx = data.get('certificate');
    if (pfx === undefined || pfx.length === 0) throw new SourceRefusal('secret_key_missing', `Secret ${name} has no key "certificate" (a PKCS#12 file) next to "password"`);
    const password = data.get('password')?.toString('utf8') ?? '';
    const digest = createHash('sha256').update(pfx).update('\0').update(password).digest('base64');
    const key = `${name} ${digest}`;
    const known = this.#parsed.get(key);
    if (known !== undefined) return known;
    let contents: Pkcs12Contents;
    try {
      contents = readPkcs12(pfx, password);
    } catch (err) {
      if (err instanceof Pkcs12Error) throw new SourceRefusal('certificate_invalid', `Secret ${name}: ${err.message}`);
      throw err;
    }
    // Bounded: one entry per Secret (an older version of it is dropped).
    for (const k of this.#parsed.keys()) if (k.startsWith(`${name} `)) this.#parsed.delete(k);
    if (this.#parsed.size >= 256) this.#parsed.delete(this.#parsed.keys().next().value!);
    this.#parsed.set(key, contents);
    return contents;
  }
}

export class FederatedSource implements TokenSource<Order<'workload-identity'>> {
  readonly client: EntraClient;
  readonly accounts: ServiceAccountTokens;

  constructor(client: EntraClient, accounts: ServiceAccountTokens) {
    this.client = client;
    this.accounts = accounts;
  }

  fetch(order: Order<'workload-identity'>, signal: AbortSignal): Promise<UpstreamAnswer> {
    return mint(this.client, order, async () => ({ client_assertion: await this.accounts.get(order.pod, order.source.serviceAccount) }), signal);
  }
}

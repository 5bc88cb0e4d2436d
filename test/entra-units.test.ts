// The pieces of Entra-sourced tokens on their own: which source the decision names (a pure
// rule, property-tested), the PKCS#12 reader on files `openssl pkcs12 -export` makes, the
// client assertion, the per-identity bound, and `nmi explain` naming source and credential.
import fc from 'fast-check';
import { createHash, verify, X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import type { AzureIdentity } from '../src/cluster/objects.ts';
import { decideToken, policyFor } from '../src/decision/decide.ts';
import { checkAuthorityHost, ENTRA_DEFAULTS, tokenSourceFor, type EntraPolicy } from '../src/decision/token-source.ts';
import { runExplain } from '../src/explain/explain.ts';
import { UpstreamFailure } from '../src/upstream/imds-client.ts';
import { clientAssertion } from '../src/upstream/entra/client-assertion.ts';
import { scopeFor } from '../src/upstream/entra/entra-client.ts';
import { IdentityGate } from '../src/upstream/entra/identity-gate.ts';
import { Pkcs12Error, readPkcs12 } from '../src/upstream/entra/pkcs12.ts';
import { tokenOrder } from '../src/upstream/token-order.ts';
import { makePkcs12 } from './helpers/entra-cluster.ts';
import { binding, identity, pod } from './helpers/objects.ts';

const T = 'aaaaaaaa-0000-4000-8000-00000000000t'.replace('t', 'f');
const app = pod({ name: 'app', namespace: 'ns', ips: ['10.0.0.1'], labels: { aadpodidbinding: 'sel' }, serviceAccount: 'runner' });

t.test('the token source: a pure rule of identity, pod and policy', async (t) => {
  const msi = identity({ name: 'm', namespace: 'ns', clientID: 'c0' });
  t.same(tokenSourceFor(msi, app, ENTRA_DEFAULTS), { kind: 'imds' }, 'type 0: IMDS by default');
  const wi: EntraPolicy = { ...ENTRA_DEFAULTS, tokenSource: 'workload-identity', tenantID: T };
  t.match(tokenSourceFor(msi, app, wi), { kind: 'workload-identity', serviceAccount: { namespace: 'ns', name: 'runner' }, tenantID: T, clientID: 'c0', authority: 'https://login.microsoftonline.com/' }, '--token-source=workload-identity');
  t.same(tokenSourceFor({ ...msi, tokenSource: 'imds' }, app, wi), { kind: 'imds' }, 'the annotation imds wins over the flag');
  t.match(tokenSourceFor({ ...msi, tokenSource: 'workload-identity', tenantID: 'contoso.com' }, app, ENTRA_DEFAULTS), { kind: 'workload-identity', tenantID: 'contoso.com' }, 'the annotation alone');
  t.equal(tokenSourceFor({ ...msi, tokenSource: 'Workload-Identity' }, app, ENTRA_DEFAULTS), 'token_source_unknown', 'values are exact');
  t.equal(tokenSourceFor({ ...msi, tokenSource: 'workload-identity' }, app, ENTRA_DEFAULTS), 'tenant_missing');
  const sp: AzureIdentity = { ...identity({ name: 's', namespace: 'ns', type: 1, clientID: 'c1' }), tenantID: T, clientPassword: { namespace: 'other', name: 'sec' } };
  t.equal(tokenSourceFor(sp, app, ENTRA_DEFAULTS), 'secret_cross_namespace');
  t.match(tokenSourceFor(sp, app, { ...ENTRA_DEFAULTS, allowCrossNamespaceSecrets: true }), { kind: 'client-secret', secret: { namespace: 'other', name: 'sec' } }, '--allow-cross-namespace-secrets');
  t.match(tokenSourceFor({ ...sp, type: 2, clientPassword: { namespace: 'ns', name: 'cert' } }, app, ENTRA_DEFAULTS), { kind: 'client-certificate' });
  t.equal(tokenSourceFor({ ...sp, tenantID: 'a/b' }, app, ENTRA_DEFAULTS), 'tenant_invalid', 'a tenant cannot reshape the endpoint path');
  t.equal(tokenSourceFor({ ...sp, adEndpoint: 'http://login.example.com' }, app, ENTRA_DEFAULTS), 'authority_insecure');
  t.match(tokenSourceFor({ ...sp, clientPassword: { namespace: 'ns', name: 'x' }, adEndpoint: 'https://login.chinacloudapi.cn' }, app, ENTRA_DEFAULTS), { authority: 'https://login.chinacloudapi.cn/' });
  for (const [text, want] of [['http://127.0.0.1:8080', 'http://127.0.0.1:8080/'], ['http://localhost/', 'http://localhost/'], ['http://[::1]:1/', 'http://[::1]:1/'], ['http://[0:0:0:0:0:0:0:1]/', 'http://[::1]/'],
    ['https://login.microsoftonline.us//', 'https://login.microsoftonline.us/'], ['http://10.0.0.1/', undefined], ['ftp://x/', undefined], ['https://h/#f', undefined]] as const) {
    t.equal(checkAuthorityHost(text), want, `authority ${text}`);
  }
});

t.test('property: no pod ever gets a federated token cached under another service account, nor IMDS for a service principal', async (t) => {
  const ids = fc.record({
    type: fc.constantFrom(0, 1, 2), annotated: fc.boolean(), tenant: fc.constantFrom('', T),
    secretNs: fc.constantFrom('ns', 'other'), flag: fc.constantFrom<'imds' | 'workload-identity'>('imds', 'workload-identity'),
    sa: fc.constantFrom('a', 'b', 'default'), allowCross: fc.boolean(),
  });
  fc.assert(fc.property(ids, ids, (x, y) => {
    const mk = (v: typeof x): { d: ReturnType<typeof decideToken>; p: ReturnType<typeof pod> } => {
      const id: AzureIdentity = {
        ...identity({ name: 'id', namespace: 'ns', type: v.type, clientID: 'c' }),
        ...(v.tenant === '' ? {} : { tenantID: v.tenant }),
        ...(v.annotated ? { tokenSource: 'workload-identity' } : {}),
        clientPassword: { namespace: v.secretNs, name: 's' },
      };
      const p = pod({ ...app, ips: [...app.ips], serviceAccount: v.sa });
      const view = { bindingsFor: () => [binding({ name: 'b', namespace: 'ns', azureIdentity: 'id', selector: 'sel' })], bindingsSelecting: () => [], identity: () => id, exceptionsIn: () => [], assignedTo: () => [] };
      const policy = policyFor('managed', true, { ...ENTRA_DEFAULTS, tokenSource: v.flag, allowCrossNamespaceSecrets: v.allowCross });
      return { d: decideToken(p, view, { apiVersion: '2018-02-01', resource: 'r', selector: undefined }, policy), p };
    };
    const a = mk(x);
    if (a.d.kind === 'grant') {
      if (x.type !== 0 && a.d.source.kind === 'imds') return false;
      if (a.d.source.kind === 'client-secret' && x.secretNs !== 'ns' && !x.allowCross) return false;
      const b = mk(y);
      if (b.d.kind === 'grant' && a.d.source.kind === 'workload-identity' && b.d.source.kind === 'workload-identity') {
        const ka = tokenOrder({ apiVersion: '2018-02-01', resource: 'r', selector: undefined }, a.d, a.p).key;
        const kb = tokenOrder({ apiVersion: '2018-02-01', resource: 'r', selector: undefined }, b.d, b.p).key;
        if ((ka === kb) !== (x.sa === y.sa)) return false;
      }
    }
    return true;
  }), { numRuns: 500 });
});

t.test('PKCS#12 files from openssl pkcs12 -export: AES, 3DES/SHA-1; RC2-40 refused naming the format', async (t) => {
  const dir = t.testdir({});
  const files = makePkcs12(dir, 'pässword');
  const cert = new X509Certificate(files.certDer);
  for (const [name, pfx] of [['AES (OpenSSL 3 default)', files.aes], ['PBE-SHA1-3DES, MAC SHA-1', files.des]] as const) {
    const got = readPkcs12(pfx, 'pässword');
    t.ok(cert.checkPrivateKey(got.key), `${name}: the key of the certificate`);
    t.same(got.certificateDer, files.certDer, `${name}: the certificate`);
    t.throws(() => readPkcs12(pfx, 'wrong'), new Pkcs12Error('the PKCS#12 MAC does not verify: wrong password (the Secret\'s "password" key) or damaged file'), `${name}: a wrong password is named`);
  }
  t.throws(() => readPkcs12(files.rc2, 'pässword'), /pbeWithSHAAnd40BitRC2-CBC \(RC2-40, OpenSSL 1\.1's default and `openssl pkcs12 -legacy`\), which Node's crypto cannot decrypt; re-export/);
  t.throws(() => readPkcs12(Buffer.from('not a pfx'), 'x'), Pkcs12Error, 'garbage is a Pkcs12Error, not a crash');
  t.throws(() => readPkcs12(files.aes.subarray(0, files.aes.length - 40), 'pässword'), Pkcs12Error, 'a truncated file');
  writeFileSync(join(dir, 'ok'), '');
});

t.test('the client assertion Entra checks: RS256, x5t and x5t#S256, aud, iss = sub, jti, nbf, exp', async (t) => {
  const files = makePkcs12(t.testdir({}), 'pw');
  const { key, certificateDer } = readPkcs12(files.aes, 'pw');
  const jwt = clientAssertion({ key, certificateDer, clientID: 'cid', audience: 'https://login/t/oauth2/v2.0/token', nowMs: 1_700_000_000_000 });
  const [h, c, s] = jwt.split('.');
  const header = JSON.parse(Buffer.from(h!, 'base64url').toString()) as Record<string, string>;
  const claims = JSON.parse(Buffer.from(c!, 'base64url').toString()) as Record<string, unknown>;
  t.same(header, { alg: 'RS256', typ: 'JWT', x5t: createHash('sha1').update(certificateDer).digest('base64url'), 'x5t#S256': createHash('sha256').update(certificateDer).digest('base64url') });
  t.match(claims, { aud: 'https://login/t/oauth2/v2.0/token', iss: 'cid', sub: 'cid', nbf: 1_700_000_000, iat: 1_700_000_000, exp: 1_700_000_600 });
  t.type(claims.jti, 'string');
  t.ok(verify('sha256', Buffer.from(`${h}.${c}`), new X509Certificate(certificateDer).publicKey, Buffer.from(s!, 'base64url')), 'signed by the certificate\'s key');
  t.equal(scopeFor('https://vault.azure.net'), 'https://vault.azure.net/.default');
  t.equal(scopeFor('https://management.azure.com/'), 'https://management.azure.com//.default');
});

t.test('per-identity bound: at most 4 at Entra and 32 waiting per identity, others unaffected', async (t) => {
  const gate = new IdentityGate(4, 32);
  const signal = new AbortController().signal;
  let running = 0;
  let peak = 0;
  const releases: Array<() => void> = [];
  const job = (): Promise<void> => new Promise<void>((resolve) => { running++; peak = Math.max(peak, running); releases.push(() => { running--; resolve(); }); });
  const all = Array.from({ length: 36 }, () => gate.run('hot', signal, job));
  await t.rejects(gate.run('hot', signal, job), UpstreamFailure, 'the 37th is refused at once');
  let otherRan = false;
  await gate.run('quiet', signal, async () => { otherRan = true; });
  t.ok(otherRan, 'another identity is not held back');
  while (releases.length > 0 || running > 0) {
    await new Promise((r) => setImmediate(r));
    releases.shift()?.();
  }
  await Promise.all(all);
  t.equal(peak, 4, 'never more than 4 at once');
});

t.test('per-identity bound: a caller that hung up before its turn takes no waiting place', async (t) => {
  const gate = new IdentityGate(1, 1);
  const open = new AbortController().signal;
  let release: () => void = () => {};
  const first = gate.run('id', open, () => new Promise<void>((r) => { release = r; }));
  const gone = AbortSignal.abort();
  const refused = await gate.run('id', gone, async () => { t.fail('never runs'); }).then(() => undefined, (err: unknown) => err);
  t.ok(refused instanceof UpstreamFailure && refused.kind === 'aborted', 'refused as aborted at once');
  let ran = false;
  const next = gate.run('id', open, async () => { ran = true; });
  release();
  await Promise.all([first, next]);
  t.ok(ran, 'the one waiting place was still free for the next caller');
});

t.test('nmi explain names the token source and where the credential is, never its value', async (t) => {
  const yaml = `
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata: {name: sp, namespace: ns}
spec: {type: 1, clientID: c1, tenantID: ${T}, clientPassword: {name: sp-secret}}
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata: {name: sp, namespace: ns}
spec: {azureIdentity: sp, selector: sp}
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata: {name: fed, namespace: ns, annotations: {podid-nmi.io/token-source: workload-identity}}
spec: {type: 0, clientID: c2}
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata: {name: fed, namespace: ns}
spec: {azureIdentity: fed, selector: fed}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: ns, uid: u-a, labels: {aadpodidbinding: sp}}
spec: {nodeName: n}
status: {phase: Running, podIPs: [{ip: 10.0.0.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: ns, uid: u-b, labels: {aadpodidbinding: fed}}
spec: {nodeName: n, serviceAccountName: runner}
status: {phase: Running, podIPs: [{ip: 10.0.0.2}]}
`;
  const file = join(t.testdir({ 's.yaml': yaml }), 's.yaml');
  const run = async (args: string[]): Promise<{ code: number; out: Record<string, unknown> }> => {
    let out = '';
    const code = await runExplain(['--cluster-state', file, '--node', 'n', '--operation-mode', 'managed', '--output', 'json', ...args], { stdout: (s) => { out += s; }, stderr: () => {}, env: {} });
    return { code, out: JSON.parse(out) as Record<string, unknown> };
  };
  const sp = await run(['--pod', 'ns/a']);
  t.match(sp.out, { decision: 'granted', tokenSource: 'client-secret', credential: 'client secret from Secret ns/sp-secret', clientID: 'c1' });
  t.match(JSON.stringify(sp.out.steps), /Entra ID \(https:\/\/login\.microsoftonline\.com\/aaaaaaaa-0000-4000-8000-00000000000f\/oauth2\/v2\.0\/token\) is asked for client c1 .*never IMDS/);
  const fed = await run(['--pod', 'ns/b', '--tenant-id', T]);
  t.match(fed.out, { decision: 'granted', tokenSource: 'workload-identity', credential: /service-account token of ns\/runner/ });
  const noTenant = await run(['--pod', 'ns/b']);
  t.match(noTenant.out, { decision: 'refused', reason: 'tenant_missing', status: 400 });
  t.equal(noTenant.code, 1);
});

// A cluster for Entra-sourced tokens: a fake API server (pods, identities, bindings, Secrets,
// service accounts, TokenRequest) and a fake Entra ID trusting the API server's issuer, with
// the daemon in front (its IMDS emulator holds none of these identities).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import { FakeApiServer, type Obj } from '../fake-apiserver/fake-apiserver.ts';
import { FakeEntra } from '../fake-entra/fake-entra.ts';
import { startStack, type Stack } from './stack.ts';

export const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';
export const NS = 'team';
export const CLIENT = {
  secret: 'c1111111-0000-4000-8000-000000000001',
  cert: 'c2222222-0000-4000-8000-000000000002',
  fed: 'c3333333-0000-4000-8000-000000000003',
  ad: 'c4444444-0000-4000-8000-000000000004',
  des: 'c5555555-0000-4000-8000-000000000005',
  rc2: 'c6666666-0000-4000-8000-000000000006',
};
export const SECRET_VALUE = 's3cr3t-value~1';
export const META = { Metadata: 'true' };
export const token = (resource: string): string => `/metadata/identity/oauth2/token?api-version=2018-02-01&resource=${encodeURIComponent(resource)}`;

export interface Pkcs12Files {
  certDer: Buffer;
  aes: Buffer;
  des: Buffer;
  rc2: Buffer;
}

/** A key and certificate, exported by `openssl pkcs12 -export` three ways, into a temp dir. */
export function makePkcs12(dir: string, password: string): Pkcs12Files {
  const run = (args: string[]): void => void execFileSync('openssl', args, { stdio: 'ignore' });
  run(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'), '-days', '2', '-subj', '/CN=podid-nmi-test-sp']);
  run(['x509', '-in', join(dir, 'c.pem'), '-outform', 'DER', '-out', join(dir, 'c.der')]);
  const base = ['pkcs12', '-export', '-inkey', join(dir, 'k.pem'), '-in', join(dir, 'c.pem'), '-passout', `pass:${password}`];
  run([...base, '-out', join(dir, 'aes.p12')]);
  run([...base, '-certpbe', 'PBE-SHA1-3DES', '-keypbe', 'PBE-SHA1-3DES', '-macalg', 'sha1', '-out', join(dir, 'des.p12')]);
  run([...base, '-legacy', '-out', join(dir, 'rc2.p12')]);
  const read = (f: string): Buffer => readFileSync(join(dir, f));
  return { certDer: read('c.der'), aes: read('aes.p12'), des: read('des.p12'), rc2: read('rc2.p12') };
}

export interface EntraCluster {
  api: FakeApiServer;
  entra: FakeEntra;
  /** A second Entra (another cloud), reached through one identity's spec.adEndpoint. */
  other: FakeEntra;
  stack: Stack;
  p12: Pkcs12Files;
}

const b64 = (v: string | Buffer): string => Buffer.from(v).toString('base64');

function pod(ip: string, name: string, label: string, sa = 'default'): Obj {
  return {
    kind: 'Pod', apiVersion: 'v1', metadata: { name, namespace: NS, uid: `uid-${name}`, labels: { aadpodidbinding: label } },
    spec: { nodeName: 'node-1', serviceAccountName: sa }, status: { phase: 'Running', podIPs: [{ ip }] },
  };
}

function identity(name: string, spec: Obj, annotations: Record<string, string> = {}): Obj {
  return { kind: 'AzureIdentity', apiVersion: 'aadpodidentity.k8s.io/v1', metadata: { name, namespace: NS, annotations }, spec };
}

function binding(name: string): Obj {
  return { kind: 'AzureIdentityBinding', apiVersion: 'aadpodidentity.k8s.io/v1', metadata: { name, namespace: NS }, spec: { azureIdentity: name, selector: name } };
}

export function secret(name: string, data: Record<string, string | Buffer>, namespace = NS): Obj {
  return { kind: 'Secret', apiVersion: 'v1', metadata: { name, namespace }, data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, b64(v)])) };
}

/** Pods .40-.52 of namespace team, each bound to the identity named like its label. */
export async function startEntraCluster(t: Test, flags: string[] = []): Promise<EntraCluster> {
  const p12 = makePkcs12(t.testdir({}), 'p12-pass');
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  const entra = await FakeEntra.start('127.0.0.1');
  t.teardown(() => entra.close());
  const other = await FakeEntra.start('127.0.0.2');
  t.teardown(() => other.close());
  entra.addApp(CLIENT.secret, { tenant: TENANT, secrets: [SECRET_VALUE] });
  entra.addApp(CLIENT.cert, { tenant: TENANT, certificates: [p12.certDer] });
  entra.addApp(CLIENT.des, { tenant: TENANT, certificates: [p12.certDer] });
  entra.addApp(CLIENT.rc2, { tenant: TENANT, certificates: [p12.certDer] });
  entra.addApp(CLIENT.fed, { tenant: TENANT, federated: [{ issuer: api.issuer, subject: `system:serviceaccount:${NS}:app-sa` }] });
  entra.trustIssuer(api.issuer, api.jwks());
  other.addApp(CLIENT.ad, { tenant: TENANT, secrets: ['other-cloud-secret'] });

  const sp = (clientID: string, secretName: string, extra: Obj = {}): Obj => ({ type: 1, clientID, tenantID: TENANT, clientPassword: { name: secretName, namespace: NS }, ...extra });
  const cert = (clientID: string, secretName: string): Obj => ({ type: 2, clientID, tenantID: TENANT, clientPassword: { name: secretName, namespace: NS } });
  const objects: Array<[Parameters<FakeApiServer['create']>[0], Obj]> = [
    ['serviceaccounts', { kind: 'ServiceAccount', apiVersion: 'v1', metadata: { name: 'default', namespace: NS, uid: 'sa-default' } }],
    ['serviceaccounts', { kind: 'ServiceAccount', apiVersion: 'v1', metadata: { name: 'app-sa', namespace: NS, uid: 'sa-app' } }],
    ['serviceaccounts', { kind: 'ServiceAccount', apiVersion: 'v1', metadata: { name: 'other-sa', namespace: NS, uid: 'sa-other' } }],
    ['secrets', secret('sp-secret', { clientSecret: SECRET_VALUE })],
    ['secrets', secret('sp-cert', { certificate: p12.aes, password: 'p12-pass' })],
    ['secrets', secret('sp-des', { certificate: p12.des, password: 'p12-pass' })],
    ['secrets', secret('sp-rc2', { certificate: p12.rc2, password: 'p12-pass' })],
    ['secrets', secret('sp-ad', { onlykey: 'other-cloud-secret' })],
    ['secrets', secret('two-keys', { username: 'u', pass: 'p' })],
    ['secrets', secret('elsewhere', { clientSecret: SECRET_VALUE }, 'vault')],
    ['azureidentities', identity('sp-secret', sp(CLIENT.secret, 'sp-secret'))],
    ['azureidentities', identity('sp-cert', cert(CLIENT.cert, 'sp-cert'))],
    ['azureidentities', identity('sp-des', cert(CLIENT.des, 'sp-des'))],
    ['azureidentities', identity('sp-rc2', cert(CLIENT.rc2, 'sp-rc2'))],
    ['azureidentities', identity('fed', { type: 0, clientID: CLIENT.fed, tenantID: TENANT }, { 'podid-nmi.io/token-source': 'workload-identity' })],
    ['azureidentities', identity('sp-ad', sp(CLIENT.ad, 'sp-ad', { adEndpoint: other.authority }))],
    ['azureidentities', identity('no-key', sp(CLIENT.secret, 'two-keys'))],
    ['azureidentities', identity('no-secret', sp(CLIENT.secret, 'ghost'))],
    ['azureidentities', identity('cross', { type: 1, clientID: CLIENT.secret, tenantID: TENANT, clientPassword: { name: 'elsewhere', namespace: 'vault' } })],
    ['azureidentities', identity('insecure', sp(CLIENT.secret, 'sp-secret', { adEndpoint: 'http://login.example.com/' }))],
    ['azureidentities', identity('no-tenant', { type: 1, clientID: CLIENT.secret, clientPassword: { name: 'sp-secret' } })],
    ['azureidentities', identity('aux', sp(CLIENT.secret, 'sp-secret', { auxiliaryTenantIDs: ['aaaaaaaa-0000-4000-8000-00000000000a'] }))],
  ];
  const pods: Array<[string, string, string, string?]> = [
    ['127.0.0.40', 'secret-app', 'sp-secret'], ['127.0.0.41', 'cert-app', 'sp-cert'], ['127.0.0.42', 'fed-app', 'fed', 'app-sa'],
    ['127.0.0.43', 'fed-other', 'fed', 'other-sa'], ['127.0.0.44', 'cross-app', 'cross'], ['127.0.0.45', 'nokey-app', 'no-key'],
    ['127.0.0.46', 'nosecret-app', 'no-secret'], ['127.0.0.47', 'ad-app', 'sp-ad'], ['127.0.0.48', 'fed-app-2', 'fed', 'app-sa'],
    ['127.0.0.49', 'insecure-app', 'insecure'], ['127.0.0.50', 'des-app', 'sp-des'], ['127.0.0.51', 'rc2-app', 'sp-rc2'],
    ['127.0.0.52', 'notenant-app', 'no-tenant'], ['127.0.0.53', 'aux-app', 'aux'],
  ];
  for (const [resource, obj] of objects) api.create(resource, obj);
  for (const name of new Set(objects.filter(([r]) => r === 'azureidentities').map(([, o]) => String((o.metadata as Obj).name)))) api.create('azureidentitybindings', binding(name));
  for (const [ip, name, label, sa] of pods) api.create('pods', pod(ip, name, label, sa));
  const stack = await startStack(t, {
    kubeconfig: api.kubeconfig(),
    flags: ['--pod-events=false', `--authority-host=${entra.authority}`, ...flags],
  });
  await stack.daemon.state.whenReady(AbortSignal.timeout(10_000));
  return { api, entra, other, stack, p12 };
}

/** Token requests the IMDS emulator received. */
export function imdsTokenCalls(s: Stack): number {
  return s.emulator.requests.filter((r) => r.url.toLowerCase().includes('/oauth2/token')).length;
}

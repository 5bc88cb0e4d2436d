// Which credential mints an identity's token: a pure function of the identity, the calling pod
// and the daemon's policy. IMDS for managed identities on the node (the default); Entra ID with
// a client secret (type 1), a certificate (type 2), or, for type 0 identities that say so (the
// annotation) or on nodes told so (--token-source=workload-identity), the pod's federated
// service-account token. Nothing here reads a Secret or calls anything: the decision names the
// credential, upstream/ fetches with it.
import {
  SERVICE_PRINCIPAL_CERTIFICATE, SERVICE_PRINCIPAL_SECRET, TOKEN_SOURCE_ANNOTATION, USER_ASSIGNED_MSI,
  type AzureIdentity, type PodInfo, type SecretRef,
} from '../cluster/objects.ts';
import type { Reason } from './reasons.ts';
import { isLoopbackHost } from '../runtime/loopback.ts';

type TokenSourceMode = 'imds' | 'workload-identity';
const WORKLOAD_IDENTITY = 'workload-identity';

export interface EntraPolicy {
  /** --token-source: where type-0 identities without the annotation get their tokens. */
  readonly tokenSource: TokenSourceMode;
  /** --authority-host, checked: an https origin (http only for loopback), with a trailing slash. */
  readonly authorityHost: string;
  /** --tenant-id: for identities without spec.tenantID ('' when unset). */
  readonly tenantID: string;
  /** --allow-cross-namespace-secrets */
  readonly allowCrossNamespaceSecrets: boolean;
}

export const DEFAULT_AUTHORITY_HOST = 'https://login.microsoftonline.com/';

export const ENTRA_DEFAULTS: EntraPolicy = Object.freeze({
  tokenSource: 'imds', authorityHost: DEFAULT_AUTHORITY_HOST, tenantID: '', allowCrossNamespaceSecrets: false,
});

/** Where Entra is asked, for whom: never a value, only names. */
export interface EntraTarget {
  /** `https://host[:port]/` (or loopback http), normalised with one trailing slash. */
  readonly authority: string;
  readonly tenantID: string;
  readonly clientID: string;
}

export type TokenSourceChoice =
  | { readonly kind: 'imds' }
  | ({ readonly kind: 'client-secret'; readonly secret: SecretRef } & EntraTarget)
  | ({ readonly kind: 'client-certificate'; readonly secret: SecretRef } & EntraTarget)
  | ({ readonly kind: 'workload-identity'; readonly serviceAccount: SecretRef } & EntraTarget);

export const IMDS_SOURCE: TokenSourceChoice = Object.freeze({ kind: 'imds' });

/** Tenant ids are GUIDs or domain names; anything else could reshape the token endpoint's path. */
const TENANT = /^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$/;

export function tokenSourceFor(identity: AzureIdentity, pod: PodInfo, policy: EntraPolicy): TokenSourceChoice | Reason {
  const federated = identity.type === USER_ASSIGNED_MSI
    && (identity.tokenSource === WORKLOAD_IDENTITY || ((identity.tokenSource ?? '') === '' && policy.tokenSource === WORKLOAD_IDENTITY));
  if (identity.type === USER_ASSIGNED_MSI && !federated) {
    if ((identity.tokenSource ?? '') !== '' && identity.tokenSource !== 'imds') return 'token_source_unknown';
    return IMDS_SOURCE;
  }
  if (identity.type !== SERVICE_PRINCIPAL_SECRET && identity.type !== SERVICE_PRINCIPAL_CERTIFICATE && !federated) return 'identity_type_unsupported';
  // NMI passed auxiliary tenants to ADAL for cross-tenant tokens (x-ms-authorization-auxiliary);
  // a client-credentials grant has no such thing, and guessing would mint a different token.
  if (identity.auxiliaryTenantIDs !== undefined && identity.auxiliaryTenantIDs.length > 0) return 'auxiliary_tenants_unsupported';
  const authority = identity.adEndpoint === undefined ? policy.authorityHost : checkAuthorityHost(identity.adEndpoint);
  if (authority === undefined) return 'authority_insecure';
  const tenantID = identity.tenantID ?? policy.tenantID;
  if (tenantID === '') return 'tenant_missing';
  if (!TENANT.test(tenantID)) return 'tenant_invalid';
  if (identity.clientID === '') return 'identity_incomplete';
  const target = { authority, tenantID, clientID: identity.clientID };
  if (federated) return { kind: 'workload-identity', serviceAccount: { namespace: pod.namespace, name: pod.serviceAccount ?? 'default' }, ...target };
  const secret = identity.clientPassword;
  if (secret === undefined) return 'secret_reference_missing';
  if (secret.namespace !== identity.namespace && !policy.allowCrossNamespaceSecrets) return 'secret_cross_namespace';
  return identity.type === SERVICE_PRINCIPAL_SECRET ? { kind: 'client-secret', secret, ...target } : { kind: 'client-certificate', secret, ...target };
}

/**
 * An authority host as Entra clients accept it: https, or http to a loopback address (a test
 * Entra); no credentials, query or fragment; a path only as the base. Undefined when refused.
 * Normalised to end with one slash, so `{authority}{tenant}/oauth2/v2.0/token` is always right.
 */
export function checkAuthorityHost(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return undefined;
  }
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') return undefined;
  // URL keeps an IPv6 host in brackets.
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopbackHost(url.hostname.replace(/^\[(.*)\]$/, '$1')))) return undefined;
  return url.origin + url.pathname.replace(/\/*$/, '/');
}

/** What `nmi explain` and logs may say of the credential: where it lives, never what it is. */
export function describeCredential(source: TokenSourceChoice): string {
  switch (source.kind) {
    case 'imds': return 'the node\'s managed identity, through IMDS';
    case 'client-secret': return `client secret from Secret ${source.secret.namespace}/${source.secret.name}`;
    case 'client-certificate': return `certificate (PKCS#12) from Secret ${source.secret.namespace}/${source.secret.name}`;
    case 'workload-identity': return `service-account token of ${source.serviceAccount.namespace}/${source.serviceAccount.name} (TokenRequest, audience api://AzureADTokenExchange)`;
  }
}

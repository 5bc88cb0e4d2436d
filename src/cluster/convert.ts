// Raw API objects (as `kubectl get -o yaml` prints them, or as the informers deliver them)
// to the read-only slices in objects.ts. Every field is treated as hostile: wrong types
// become a ConversionError naming the field, never a half-filled object.
import { isIP } from 'node:net';
import { NAMESPACED_ANNOTATION, TOKEN_SOURCE_ANNOTATION } from './objects.ts';
import type {
  AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding, AzurePodIdentityException, ClusterObject, PodInfo,
} from './objects.ts';

export const CRD_GROUP = 'aadpodidentity.k8s.io';

export class ConversionError extends Error {
  override name = 'ConversionError';
}

type Raw = Record<string, unknown>;

function asRecord(value: unknown, field: string): Raw {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new ConversionError(`${field} must be an object`);
  return value as Raw;
}

function asString(value: unknown, field: string, required = false): string {
  if (value === undefined || value === null) {
    if (required) throw new ConversionError(`${field} is required`);
    return '';
  }
  if (typeof value !== 'string') throw new ConversionError(`${field} must be a string`);
  return value;
}

function asStringMap(value: unknown, field: string): Record<string, string> {
  const raw = asRecord(value, field);
  const out: Record<string, string> = Object.create(null);
  for (const key of Object.keys(raw)) out[key] = asString(raw[key], `${field}.${key}`, true);
  return out;
}

/** Canonical text of an IP so that lookups by a socket's remote address find it; '' if not an IP. */
export function canonicalIp(text: string): string {
  const family = isIP(text);
  if (family === 4) return text;
  // A zone index (fe80::1%eth0) never names a pod's address.
  if (family !== 6 || text.includes('%')) return '';
  // The URL parser prints IPv6 in the compressed lower-case form sockets report.
  const compressed = new URL(`http://[${text}]/`).hostname.slice(1, -1);
  return unmapIpv4(compressed);
}

/** Every spelling of an IPv4-mapped address (::ffff:1.2.3.4, ::ffff:102:304) to plain 1.2.3.4. */
function unmapIpv4(compressed: string): string {
  if (!compressed.startsWith('::ffff:')) return compressed;
  const tail = compressed.slice(7);
  if (isIP(tail) === 4) return tail;
  const groups = tail.split(':');
  if (groups.length !== 2) return compressed;
  const hi = parseInt(groups[0]!, 16);
  const lo = parseInt(groups[1]!, 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/**
 * A spec field as Go's encoding/json finds it, which NMI used: the exact key, else the one
 * key equal to it case-insensitively (`ClientID`, `Selector` from old manifests). Two such
 * keys with no exact one are ambiguous: refused rather than guessed.
 */
function field(spec: Raw, name: string): unknown {
  if (Object.hasOwn(spec, name)) return spec[name];
  const lower = name.toLowerCase();
  const matches = Object.keys(spec).filter((k) => k.toLowerCase() === lower);
  if (matches.length > 1) throw new ConversionError(`spec.${name} is given as ${matches.join(' and ')}`);
  return matches.length === 1 ? spec[matches[0]!] : undefined;
}

function metadataOf(raw: Raw, where = 'metadata'): { namespace: string; name: string; labels: Record<string, string>; uid: string; deletionTimestamp: string } {
  const meta = asRecord(raw.metadata, where);
  return {
    deletionTimestamp: asString(meta.deletionTimestamp, `${where}.deletionTimestamp`),
    name: asString(meta.name, `${where}.name`, true),
    namespace: asString(meta.namespace, `${where}.namespace`) || 'default',
    labels: asStringMap(meta.labels, `${where}.labels`),
    uid: asString(meta.uid, `${where}.uid`),
  };
}

/** Terminating, with at least one container status and every one of them (init and ephemeral too) terminated. */
function isStoppedWhileTerminating(deletionTimestamp: string, status: Raw): boolean {
  if (deletionTimestamp === '') return false;
  const statuses: unknown[] = [];
  for (const key of ['initContainerStatuses', 'containerStatuses', 'ephemeralContainerStatuses']) {
    const list = status[key];
    if (list === undefined || list === null) continue;
    if (!Array.isArray(list)) throw new ConversionError(`status.${key} must be a list`);
    statuses.push(...list);
  }
  return statuses.length > 0 && statuses.every((s, i) => {
    const state = asRecord(asRecord(s, `status.containerStatuses[${i}]`).state, `status.containerStatuses[${i}].state`);
    return state.terminated !== undefined && state.terminated !== null;
  });
}

export function toPodInfo(raw: Raw): PodInfo {
  const meta = metadataOf(raw);
  const spec = asRecord(raw.spec, 'spec');
  const status = asRecord(raw.status, 'status');
  const ips: string[] = [];
  const addIp = (value: unknown, field: string): void => {
    const ip = canonicalIp(asString(value, field));
    if (ip !== '' && !ips.includes(ip)) ips.push(ip);
  };
  if (status.podIPs !== undefined && status.podIPs !== null) {
    if (!Array.isArray(status.podIPs)) throw new ConversionError('status.podIPs must be a list');
    status.podIPs.forEach((entry, i) => addIp(asRecord(entry, `status.podIPs[${i}]`).ip, `status.podIPs[${i}].ip`));
  }
  if (status.podIP !== undefined) addIp(status.podIP, 'status.podIP');
  // A deleted pod whose containers have all stopped can no longer send from its address, which
  // the network may hand to a new pod before the delete event arrives: it holds no address here.
  if (isStoppedWhileTerminating(meta.deletionTimestamp, status)) ips.length = 0;
  return {
    uid: meta.uid || `${meta.namespace}/${meta.name}`,
    namespace: meta.namespace,
    name: meta.name,
    labels: meta.labels,
    ips,
    phase: asString(status.phase, 'status.phase'),
    hostNetwork: spec.hostNetwork === true,
    nodeName: asString(spec.nodeName, 'spec.nodeName'),
    serviceAccount: asString(spec.serviceAccountName, 'spec.serviceAccountName') || 'default',
  };
}

/** `where` names the object inside another one (an AAI's spec.azureIdentityRef) in errors. */
export function toAzureIdentity(raw: Raw, where = ''): AzureIdentity {
  const meta = metadataOf(raw, `${where}metadata`);
  const spec = asRecord(raw.spec, `${where}spec`);
  const type = field(spec, 'type') ?? 0;
  if (typeof type !== 'number' || !Number.isInteger(type)) throw new ConversionError(`${where}spec.type must be an integer`);
  const annotations = asRecord(asRecord(raw.metadata, `${where}metadata`).annotations, `${where}metadata.annotations`);
  return {
    namespace: meta.namespace,
    name: meta.name,
    type,
    clientID: asString(field(spec, 'clientID'), `${where}spec.clientID`),
    resourceID: asString(field(spec, 'resourceID'), `${where}spec.resourceID`),
    // NMI compared exactly: aadpodid.IsNamespacedIdentity.
    namespaced: annotations[NAMESPACED_ANNOTATION] === 'namespaced',
    ...entraFields(spec, annotations, meta.namespace, where),
  };
}

/** The fields only Entra-sourced identities use; absent ones stay absent so MSI slices stay small. */
function entraFields(spec: Raw, annotations: Raw, namespace: string, where: string): Partial<AzureIdentity> {
  const out: { -readonly [K in keyof AzureIdentity]?: AzureIdentity[K] } = {};
  const tenantID = asString(field(spec, 'tenantID'), `${where}spec.tenantID`);
  if (tenantID !== '') out.tenantID = tenantID;
  const adEndpoint = asString(field(spec, 'adEndpoint'), `${where}spec.adEndpoint`);
  if (adEndpoint !== '') out.adEndpoint = adEndpoint;
  const password = field(spec, 'clientPassword');
  if (password !== undefined && password !== null) {
    const ref = asRecord(password, `${where}spec.clientPassword`);
    const name = asString(field(ref, 'name'), `${where}spec.clientPassword.name`);
    // NMI read the Secret from the namespace named here, '' meaning the identity's own.
    if (name !== '') out.clientPassword = { name, namespace: asString(field(ref, 'namespace'), `${where}spec.clientPassword.namespace`) || namespace };
  }
  const aux = field(spec, 'auxiliaryTenantIDs');
  if (aux !== undefined && aux !== null) {
    if (!Array.isArray(aux)) throw new ConversionError(`${where}spec.auxiliaryTenantIDs must be a list`);
    const ids = aux.map((v, i) => asString(v, `${where}spec.auxiliaryTenantIDs[${i}]`, true)).filter((v) => v !== '');
    if (ids.length > 0) out.auxiliaryTenantIDs = ids;
  }
  const source = annotations[TOKEN_SOURCE_ANNOTATION];
  if (source !== undefined) out.tokenSource = asString(source, `${where}metadata.annotations["${TOKEN_SOURCE_ANNOTATION}"]`);
  return out;
}

export function toAzureIdentityBinding(raw: Raw): AzureIdentityBinding {
  const meta = metadataOf(raw);
  const spec = asRecord(raw.spec, 'spec');
  return {
    namespace: meta.namespace,
    name: meta.name,
    azureIdentity: asString(field(spec, 'azureIdentity'), 'spec.azureIdentity'),
    selector: asString(field(spec, 'selector'), 'spec.selector'),
  };
}

export function toAzurePodIdentityException(raw: Raw): AzurePodIdentityException {
  const meta = metadataOf(raw);
  const spec = asRecord(raw.spec, 'spec');
  return { namespace: meta.namespace, name: meta.name, podLabels: asStringMap(field(spec, 'podLabels'), 'spec.podLabels') };
}

/**
 * MIC's AzureAssignedIdentity. spec.nodename is spelled so by MIC (Go's json tag is
 * `nodename`); the embedded identity is required, since it is what would be minted.
 */
export function toAzureAssignedIdentity(raw: Raw): AzureAssignedIdentity {
  const meta = metadataOf(raw);
  const spec = asRecord(raw.spec, 'spec');
  const status = asRecord(raw.status, 'status');
  const identityRef = field(spec, 'azureIdentityRef');
  if (identityRef === undefined || identityRef === null) throw new ConversionError('spec.azureIdentityRef is required');
  const bindingRef = field(spec, 'azureBindingRef');
  const bindingSpec = bindingRef === undefined || bindingRef === null
    ? undefined
    : asRecord(asRecord(bindingRef, 'spec.azureBindingRef').spec, 'spec.azureBindingRef.spec');
  return {
    namespace: meta.namespace,
    name: meta.name,
    pod: asString(field(spec, 'pod'), 'spec.pod', true),
    podNamespace: asString(field(spec, 'podNamespace'), 'spec.podNamespace', true),
    nodeName: asString(field(spec, 'nodename'), 'spec.nodename'),
    state: asString(field(status, 'status'), 'status.status'),
    identity: toAzureIdentity(asRecord(identityRef, 'spec.azureIdentityRef'), 'spec.azureIdentityRef.'),
    bindingSelector: bindingSpec === undefined ? undefined : asString(field(bindingSpec, 'selector'), 'spec.azureBindingRef.spec.selector'),
  };
}

/** Converts any supported object by its `kind`; undefined for kinds the daemon does not read. */
export function toClusterObject(raw: unknown): ClusterObject | undefined {
  const obj = asRecord(raw, 'document');
  const kind = asString(obj.kind, 'kind', true);
  switch (kind) {
    case 'Pod': return { kind, object: toPodInfo(obj) };
    case 'AzureIdentity': return { kind, object: toAzureIdentity(obj) };
    case 'AzureIdentityBinding': return { kind, object: toAzureIdentityBinding(obj) };
    case 'AzurePodIdentityException': return { kind, object: toAzurePodIdentityException(obj) };
    case 'AzureAssignedIdentity': return { kind, object: toAzureAssignedIdentity(obj) };
    default: return undefined;
  }
}

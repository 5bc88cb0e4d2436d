// The flags that choose token sources other than IMDS, shared by the daemon and `nmi explain`
// (one reading, so the two cannot disagree).
import { checkAuthorityHost, DEFAULT_AUTHORITY_HOST, type EntraPolicy } from '../decision/token-source.ts';
import { FlagError, type FlagSpec, type FlagValues } from './flags.ts';

export const ENTRA_FLAGS: readonly FlagSpec[] = [
  { name: 'token-source', type: 'string', default: 'imds', choices: ['imds', 'workload-identity'], help: 'Where type-0 AzureIdentities get their tokens: imds (assigned to the node), or workload-identity (Entra ID, federated with the pod\'s service account); the annotation podid-nmi.io/token-source overrides it per identity' },
  { name: 'authority-host', type: 'string', default: DEFAULT_AUTHORITY_HOST, env: 'AZURE_AUTHORITY_HOST', help: 'Entra ID authority for identities without spec.adEndpoint: https only (http only to a loopback address)' },
  { name: 'tenant-id', type: 'string', default: '', env: 'AZURE_TENANT_ID', help: 'Entra tenant for identities without spec.tenantID' },
  { name: 'allow-cross-namespace-secrets', type: 'bool', default: false, help: 'Let a service-principal AzureIdentity name a Secret in another namespace (NMI did, which let anyone who can write an AzureIdentity use any Secret)' },
];

export function entraPolicy(v: FlagValues): EntraPolicy {
  const authorityHost = checkAuthorityHost(String(v['authority-host']));
  if (authorityHost === undefined) throw new FlagError(`flag --authority-host: ${JSON.stringify(v['authority-host'])} is not an https URL (http only to a loopback address) without credentials or query`);
  return {
    tokenSource: v['token-source'] === 'workload-identity' ? 'workload-identity' : 'imds',
    authorityHost,
    tenantID: String(v['tenant-id']),
    allowCrossNamespaceSecrets: v['allow-cross-namespace-secrets'] === true,
  };
}

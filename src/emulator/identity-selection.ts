import type { EmulatedIdentity } from './types.ts';
import { ErrorText } from './imds-responses.ts';

const SELECTORS = ['client_id', 'object_id', 'msi_res_id', 'mi_res_id'] as const;

export type SelectionResult = { ok: true; identity: EmulatedIdentity } | { ok: false; description: string };

/**
 * Picks the identity a token request names. GUIDs and ARM ids are case-insensitive in Azure,
 * so matching is too. An empty selector value counts as absent.
 */
export function selectIdentity(
  params: Map<string, string>,
  identities: readonly EmulatedIdentity[],
  systemAssigned: EmulatedIdentity | undefined,
): SelectionResult {
  const given = SELECTORS.filter((name) => (params.get(name) ?? '') !== '');
  if (given.length > 1) return { ok: false, description: ErrorText.multipleSelectors };
  const notFound = { ok: false, description: ErrorText.identityNotFound } as const;

  const selector = given[0];
  if (selector === undefined) {
    if (systemAssigned) return { ok: true, identity: systemAssigned };
    const only = identities.length === 1 ? identities[0] : undefined;
    return only ? { ok: true, identity: only } : notFound;
  }

  const wanted = (params.get(selector) ?? '').toLowerCase();
  const pool = systemAssigned ? [systemAssigned, ...identities] : identities;
  const field = (id: EmulatedIdentity): string =>
    selector === 'client_id' ? id.clientID : selector === 'object_id' ? id.objectID : id.resourceID;
  const match = pool.find((id) => field(id).toLowerCase() === wanted);
  return match ? { ok: true, identity: match } : notFound;
}

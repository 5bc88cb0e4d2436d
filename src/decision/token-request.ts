// The token request as the decision sees it: only the values IMDS defines, each checked.
// Unknown parameters are dropped here, so nothing the pod invented can travel upstream.
import type { Reason } from './reasons.ts';

export type SelectorName = 'client_id' | 'object_id' | 'msi_res_id';

export interface Selector {
  readonly name: SelectorName;
  readonly value: string;
}

export interface TokenRequest {
  readonly apiVersion: string;
  readonly resource: string;
  readonly selector: Selector | undefined;
}

const MAX_VALUE_LENGTH = 2048;

/** Query keys that name an identity; `mi_res_id` is the older alias some SDKs still send. */
const SELECTOR_KEYS: ReadonlyArray<readonly [string, SelectorName]> = [
  ['client_id', 'client_id'],
  ['object_id', 'object_id'],
  ['msi_res_id', 'msi_res_id'],
  ['mi_res_id', 'msi_res_id'],
];

export function parseTokenRequest(params: ReadonlyMap<string, string>): TokenRequest | Reason {
  const apiVersion = params.get('api-version');
  if (apiVersion === undefined || apiVersion.length === 0) return 'api_version_missing';
  if (!isApiVersion(apiVersion)) return 'api_version_invalid';
  const resource = params.get('resource');
  if (resource === undefined || resource.length === 0) return 'resource_missing';
  if (!isPlainValue(resource)) return 'parameter_invalid';
  let selector: Selector | undefined;
  // Once every parameter is accounted for, the keys left to look up cannot be there.
  let unseen = params.size - 2;
  for (let i = 0; unseen > 0 && i < SELECTOR_KEYS.length; i++) {
    const [key, name] = SELECTOR_KEYS[i]!;
    const value = params.get(key);
    if (value === undefined) continue;
    unseen--;
    if (selector !== undefined) return 'selector_multiple';
    if (value.length === 0 || !isPlainValue(value)) return 'parameter_invalid';
    selector = { name, value };
  }
  return { apiVersion, resource, selector };
}

/** `2018-02-01`, `2021-12-13-preview`: digits, lower-case letters and dashes, short. */
export function isApiVersion(value: string): boolean {
  if (value.length < 10 || value.length > 32) return false;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    const ok = (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x7a) || c === 0x2d;
    if (!ok) return false;
  }
  return true;
}

/** Bounded length, no C0 or C1 control characters (they have no business in a resource or an id). */
export function isPlainValue(value: string): boolean {
  if (value.length > MAX_VALUE_LENGTH) return false;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) return false;
  }
  return true;
}

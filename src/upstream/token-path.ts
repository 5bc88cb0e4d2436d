// The upstream token request, rebuilt from checked values only: never the pod's raw path or query.
import type { Selector } from '../decision/token-request.ts';

export function tokenPath(apiVersion: string, resource: string, selector: Selector | undefined): string {
  let path = '/metadata/identity/oauth2/token?api-version=' + encoded(apiVersion) + '&resource=' + encoded(resource);
  if (selector !== undefined) path += '&' + selector.name + '=' + encoded(selector.value);
  return path;
}

// A pod asks for the same few values again and again: each is encoded once. Bounded in count and
// in length, so a pod sending new values costs a miss each, never memory.
const MEMO_ENTRIES = 256;
const MEMO_LENGTH = 256;
const memo = new Map<string, string>();

function encoded(value: string): string {
  let e = memo.get(value);
  if (e !== undefined) return e;
  e = encodeURIComponent(value);
  if (value.length <= MEMO_LENGTH) {
    if (memo.size >= MEMO_ENTRIES) memo.clear();
    memo.set(value, e);
  }
  return e;
}

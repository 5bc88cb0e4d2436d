// The upstream token request, rebuilt from checked values only: never the pod's raw path or query.
import type { Selector } from '../decision/token-request.ts';
import { stringMemo } from '../runtime/string-memo.ts';

export function tokenPath(apiVersion: string, resource: string, selector: Selector | undefined): string {
  let path = '/metadata/identity/oauth2/token?api-version=' + encoded(apiVersion) + '&resource=' + encoded(resource);
  if (selector !== undefined) path += '&' + selector.name + '=' + encoded(selector.value);
  return path;
}

// Each value encoded once (string-memo.ts).
const encoded = stringMemo(encodeURIComponent);

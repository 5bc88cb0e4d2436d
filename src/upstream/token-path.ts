// The upstream token request, rebuilt from checked values only: never the pod's raw path or query.
import type { Selector } from '../decision/token-request.ts';

export function tokenPath(apiVersion: string, resource: string, selector: Selector | undefined): string {
  let path = '/metadata/identity/oauth2/token?api-version=' + encodeURIComponent(apiVersion)
    + '&resource=' + encodeURIComponent(resource);
  if (selector !== undefined) path += '&' + selector.name + '=' + encodeURIComponent(selector.value);
  return path;
}

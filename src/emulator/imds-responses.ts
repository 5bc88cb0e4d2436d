import type { ServerResponse } from 'node:http';

export const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  extraHeaders: Record<string, string> = {},
): void {
  sendRaw(res, status, JSON.stringify(body), { 'Content-Type': JSON_CONTENT_TYPE, ...extraHeaders });
}

export function sendRaw(res: ServerResponse, status: number, body: string, headers: Record<string, string>): void {
  if (res.headersSent || res.destroyed) return;
  const payload = Buffer.from(body, 'utf8');
  res.writeHead(status, { ...headers, 'Content-Length': String(payload.length) });
  res.end(payload);
}

export function sendError(
  res: ServerResponse,
  status: number,
  error: string,
  description: string,
  extraHeaders: Record<string, string> = {},
): void {
  sendJson(res, status, { error, error_description: description }, extraHeaders);
}

/** The descriptions real IMDS uses where they are known; callers match on the first two. */
export const ErrorText = {
  metadataHeader: 'Required metadata header not specified',
  identityNotFound: 'Identity not found',
  forwardedFor: 'Request contains an X-Forwarded-For header; IMDS is not meant to be used through a proxy',
  apiVersionMissing: 'Required query variable api-version is missing',
  resourceMissing: 'Required query variable resource is missing',
  multipleSelectors: 'Only one of client_id, object_id, msi_res_id (mi_res_id) may be specified',
  duplicateParameter: (name: string) => `Duplicate query parameter ${name}`,
  malformedQuery: 'Malformed query string',
  absoluteTarget: 'Request target must be a path',
  notFound: 'The requested path was not found',
  methodNotAllowed: (method: string) => `Method ${method} is not allowed on this path`,
  tooManyRequests: 'Too many requests for managed identity tokens; retry later',
  tooManyConcurrent: 'Too many concurrent requests for managed identity tokens; retry later',
} as const;

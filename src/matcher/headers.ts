// Request headers every route judges the same way, before any lookup.

/** IMDS refuses proxied requests; a pod that sends these is trying to look like a proxy. */
export function isForwarded(headers: { 'x-forwarded-for'?: unknown; forwarded?: unknown }): boolean {
  return headers['x-forwarded-for'] !== undefined || headers.forwarded !== undefined;
}

/** IMDS's rule: exactly one `Metadata` header whose value is `true`, in any case. */
export function isMetadataTrue(value: string | string[] | undefined): boolean {
  return typeof value === 'string' && value.length === 4 && value.toLowerCase() === 'true';
}

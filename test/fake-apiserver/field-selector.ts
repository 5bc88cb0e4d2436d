// Field and label selectors as the API server evaluates them: `a=b`, `a==b`, `a!=b`,
// comma-separated, all requirements must hold; fields only those a resource supports.
// (Label selectors' set-based forms are not needed by the daemon, so they are refused.)
import type { ResourceInfo } from './resources.ts';

type Obj = Record<string, unknown>;

interface Requirement {
  field: string;
  value: string;
  negate: boolean;
}

export class FieldSelectorError extends Error {}

export type FieldSelector = (obj: Obj) => boolean;

function fieldValue(obj: Obj, field: string): string {
  let cur: unknown = obj;
  for (const part of field.split('.')) {
    if (typeof cur !== 'object' || cur === null) return '';
    cur = (cur as Obj)[part];
  }
  if (cur === undefined || cur === null) return field === 'spec.hostNetwork' ? 'false' : '';
  return String(cur);
}

export function parseFieldSelector(text: string, resource: ResourceInfo): FieldSelector {
  const reqs: Requirement[] = [];
  for (const part of text.split(',')) {
    if (part.trim() === '') continue;
    const m = /^([^!=]+)(==|!=|=)(.*)$/.exec(part.trim());
    if (m === null) throw new FieldSelectorError(`invalid field selector: ${part}`);
    const field = m[1]!.trim();
    if (!resource.fields.has(field)) throw new FieldSelectorError(`field label not supported: ${field}`);
    reqs.push({ field, value: m[3]!.trim(), negate: m[2] === '!=' });
  }
  return (obj) => reqs.every((r) => (fieldValue(obj, r.field) === r.value) !== r.negate);
}

/** Equality-based label selectors; a missing label compares as absent (`a!=b` holds). */
export function parseLabelSelector(text: string): FieldSelector {
  const reqs: Requirement[] = [];
  for (const part of text.split(',')) {
    if (part.trim() === '') continue;
    const m = /^([A-Za-z0-9._/-]+)\s*(==|!=|=)\s*([A-Za-z0-9._-]*)$/.exec(part.trim());
    if (m === null) throw new FieldSelectorError(`unable to parse requirement: ${part}`);
    reqs.push({ field: m[1]!, value: m[3]!, negate: m[2] === '!=' });
  }
  return (obj) => {
    const labels = ((obj.metadata as Obj | undefined)?.labels ?? {}) as Record<string, unknown>;
    return reqs.every((r) => (labels[r.field] === r.value) !== r.negate);
  };
}

/** Both selectors of a list or watch request, as one predicate. */
export function parseSelectors(query: Record<string, string>, resource: ResourceInfo): FieldSelector {
  const fields = parseFieldSelector(query.fieldSelector ?? '', resource);
  const labels = parseLabelSelector(query.labelSelector ?? '');
  return (obj) => fields(obj) && labels(obj);
}

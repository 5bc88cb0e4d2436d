// Who may call /host/token: pods named by namespace and equality label selector, as
// `--host-token-callers` lists them (`ns/k=v[,k=v…]`, several separated by ';').
import type { PodInfo } from '../cluster/objects.ts';

export interface CallerRule {
  readonly namespace: string;
  readonly labels: ReadonlyArray<readonly [string, string]>;
}

const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const LABEL_KEY = /^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

/** Throws an Error naming the bad entry; an empty text allows nobody. */
export function parseHostTokenCallers(text: string): CallerRule[] {
  const rules: CallerRule[] = [];
  for (const raw of text.split(';')) {
    const entry = raw.trim();
    if (entry === '') continue;
    const slash = entry.indexOf('/');
    const namespace = slash === -1 ? '' : entry.slice(0, slash);
    const selector = slash === -1 ? '' : entry.slice(slash + 1);
    if (!NAME.test(namespace)) throw new Error(`${JSON.stringify(entry)}: expected namespace/label=value[,label=value…]`);
    const labels: Array<[string, string]> = [];
    for (const term of selector.split(',')) {
      const eq = term.indexOf('=');
      const k = eq === -1 ? '' : term.slice(0, eq).trim();
      const v = eq === -1 ? '' : term.slice(eq + 1).trim();
      // Only equality: a caller list that "!=" or "exists" could widen by accident is not worth having.
      if (!LABEL_KEY.test(k) || v.startsWith('=') || !LABEL_VALUE.test(v)) {
        throw new Error(`${JSON.stringify(entry)}: ${JSON.stringify(term)} is not label=value`);
      }
      labels.push([k, v]);
    }
    rules.push({ namespace, labels });
  }
  return rules;
}

/** Exact namespace, every label equal (case-sensitive, as Kubernetes selectors are). */
export function isAllowedCaller(pod: PodInfo, rules: readonly CallerRule[]): boolean {
  return rules.some((r) => r.namespace === pod.namespace && r.labels.every(([k, v]) => pod.labels[k] === v));
}

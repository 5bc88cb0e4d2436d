// A pod asks with the same few values again and again (resources, api-versions, client ids), so
// what is derived from such a string is derived once. Bounded in count and in the length of what
// it keeps: a pod sending new values costs a miss each, never memory.
const MAX_ENTRIES = 256;
const MAX_LENGTH = 256;

/** `derive`, remembered for the strings it was last asked about. */
export function stringMemo<T>(derive: (value: string) => T): (value: string) => T {
  const known = new Map<string, T>();
  return (value) => {
    const kept = known.get(value);
    if (kept !== undefined || known.has(value)) return kept as T;
    const derived = derive(value);
    if (value.length <= MAX_LENGTH) {
      if (known.size >= MAX_ENTRIES) known.clear();
      known.set(value, derived);
    }
    return derived;
  };
}

import fc from 'fast-check';
import t from 'tap';
import { ListFormatError, ListItemReader, MAX_ITEM_CHARS } from '../src/cluster/list-items.ts';

function read(chunks: string[]): { items: unknown[]; envelope: unknown } {
  const items: unknown[] = [];
  const reader = new ListItemReader((item) => items.push(item));
  for (const c of chunks) reader.push(c);
  return { items, envelope: reader.end() };
}

/** `text` cut at the given offsets. */
function cut(text: string, offsets: number[]): string[] {
  const at = [...new Set(offsets.map((o) => o % (text.length + 1)))].sort((a, b) => a - b);
  const out: string[] = [];
  let from = 0;
  for (const o of at) {
    out.push(text.slice(from, o));
    from = o;
  }
  out.push(text.slice(from));
  return out;
}

const LIST = {
  kind: 'AzureIdentityList',
  apiVersion: 'aadpodidentity.k8s.io/v1',
  metadata: { resourceVersion: '42', continue: 'abc' },
  items: [
    { metadata: { name: 'a', namespace: 'n', annotations: { note: 'has "items": [1, {2}] and \\ and ] , } inside' } }, spec: { clientID: 'c1' } },
    { metadata: { name: 'b' }, spec: { list: [[], {}, [{ x: [] }]], 'items': ['nested items key'] } },
    null,
    42,
    'text',
  ],
};

t.test('every element of items comes out parsed, in order, and the envelope keeps the rest', async (t) => {
  const text = JSON.stringify(LIST);
  const { items, envelope } = read([text]);
  t.same(items, LIST.items);
  t.same(envelope, { ...LIST, items: [] });
});

t.test('the result does not depend on where the text is cut into chunks', async () => {
  const text = JSON.stringify(LIST, null, 1); // whitespace between tokens too
  fc.assert(fc.property(fc.array(fc.nat(), { maxLength: 12 }), (offsets) => {
    const { items, envelope } = read(cut(text, offsets));
    return JSON.stringify(items) === JSON.stringify(LIST.items) && JSON.stringify(envelope) === JSON.stringify({ ...LIST, items: [] });
  }), { numRuns: 300 });
});

t.test('items before the metadata, an empty list, and a key named items at depth two', async (t) => {
  t.same(read(['{"items":[{"a":1}],"metadata":{"resourceVersion":"7"}}']), { items: [{ a: 1 }], envelope: { items: [], metadata: { resourceVersion: '7' } } });
  t.same(read(['{"metadata":{"resourceVersion":"7"},"items":[ ]}']), { items: [], envelope: { metadata: { resourceVersion: '7' }, items: [] } });
  t.same(read(['{"metadata":{"items":[{"not":"an item"}]},"items":[]}']).items, [], 'only the top-level items array is split');
});

t.test('broken responses are errors naming what is wrong', async (t) => {
  t.throws(() => read(['{"items":[{"a":1},{"b":']), new ListFormatError('list response: truncated'));
  t.throws(() => read(['{"items":[{"a":1},{b:2}]}']), { name: 'ListFormatError', message: /^list response: an item is not JSON/ });
  t.throws(() => read(['{"items":[]}}']), new ListFormatError('list response: unbalanced brackets'));
  t.throws(() => read(['{"items":[],"metadata":']), new ListFormatError('list response: truncated'));
  const reader = new ListItemReader(() => {});
  reader.push('{"items":[{"big":"');
  t.throws(() => reader.push('x'.repeat(MAX_ITEM_CHARS)), new ListFormatError(`list response: an item over ${MAX_ITEM_CHARS} characters`));
});

t.test('any JSON items, cut anywhere, come out as JSON.parse gives them', async () => {
  const text = fc.string({ unit: fc.constantFrom('a', '"', '\\', '[', ']', '{', '}', ',', ':', ' ', 'é', '\u2028') });
  fc.assert(fc.property(
    fc.array(fc.oneof(fc.jsonValue(), fc.dictionary(text, text))), text, fc.array(fc.nat(), { maxLength: 20 }),
    (items, note, offsets) => {
      const list = { kind: 'List', metadata: { resourceVersion: note }, items };
      const { items: out, envelope } = read(cut(JSON.stringify(list), offsets));
      return JSON.stringify(out) === JSON.stringify(JSON.parse(JSON.stringify(items))) && JSON.stringify(envelope) === JSON.stringify({ ...list, items: [] });
    },
  ), { numRuns: 500 });
});

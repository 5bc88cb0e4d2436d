// The hot path's shortcuts (issue 20) against the general rules they skip: the token path
// compared as a whole in matchTarget, keys spelled as IMDS defines them in parseQuery, and
// parseTokenRequest stopping once every parameter is accounted for. Each must answer exactly
// as the general path does, refusals included.
import { isDeepStrictEqual } from 'node:util';
import t from 'tap';
import fc from 'fast-check';
import { parseTokenRequest, type TokenRequest } from '../src/decision/token-request.ts';
import type { Reason } from '../src/decision/reasons.ts';
import { MAX_QUERY_PARAMETERS, parseQuery } from '../src/matcher/query.ts';
import { matchTarget } from '../src/matcher/request-target.ts';
import { ROUTES } from '../src/matcher/routes.ts';

const TOKEN_PATH = '/metadata/identity/oauth2/token';

const queryChar = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz-_0123456789=&%+.:/'.split('')) },
  { weight: 1, arbitrary: fc.constantFrom(' ', '#', '\t', '\u0000', '\u007f', 'é', '?', '"', '!', '~') },
);
const queryArb = fc.array(queryChar, { maxLength: 60 }).map((cs) => cs.join(''));

t.test('matchTarget: the whole-path comparison gives what the general checks give (property)', async (t) => {
  // The general path lower-cases the /metadata prefix: the same target spelled /METADATA takes it.
  t.doesNotThrow(() => fc.assert(fc.property(queryArb, fc.boolean(), fc.boolean(), (query, hasQuery, block) => {
    const rest = `/identity/oauth2/token${hasQuery ? `?${query}` : ''}`;
    const fast = matchTarget(`/metadata${rest}`, block);
    const general = matchTarget(`/METADATA${rest}`, block);
    return isDeepStrictEqual(fast, general);
  }), { numRuns: 2000 }));
  t.equal(matchTarget(`${TOKEN_PATH}?a=1#x`, false), 'target_not_canonical', 'a fragment in the query is still refused');
  t.equal(matchTarget(`${TOKEN_PATH}?a= 1`, false), 'target_not_canonical', 'a space in the query is still refused');
  t.same(matchTarget(`${TOKEN_PATH}?`, false), { route: ROUTES.token, path: TOKEN_PATH, rawQuery: '' });
});

/** The query rules written out plainly: split, decode each part, lower-case keys, no repeats, at most 32. */
function referenceParse(raw: string): Array<[string, string]> | string {
  const out: Array<[string, string]> = [];
  if (raw === '') return out;
  for (const part of raw.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const k = plainDecode(eq === -1 ? part : part.slice(0, eq));
    const v = eq === -1 ? '' : plainDecode(part.slice(eq + 1));
    if (k === undefined || v === undefined || k === '') return 'query_malformed';
    const key = k.toLowerCase();
    if (out.some(([name]) => name === key)) return 'query_duplicate_parameter';
    if (out.length === MAX_QUERY_PARAMETERS) return 'query_malformed';
    out.push([key, v]);
  }
  return out;
}

function plainDecode(text: string): string | undefined {
  try {
    return decodeURIComponent(text.replaceAll('+', ' '));
  } catch {
    return undefined;
  }
}

const KEYS = ['api-version', 'resource', 'client_id', 'object_id', 'msi_res_id', 'mi_res_id', 'format', 'nonce', 'other', 'client_i', 'Resourcex'];
/** A key as a pod may spell it: as defined, in another case, with escapes, or '+' for a space. */
const keyArb = fc.tuple(fc.constantFrom(...KEYS), fc.array(fc.constantFrom('as-is', 'upper', 'escape'), { minLength: 1, maxLength: 12 })).map(([key, how]) =>
  key.split('').map((c, i) => {
    const h = how[i % how.length];
    if (h === 'upper') return c.toUpperCase();
    if (h === 'escape') return `%${c.charCodeAt(0).toString(16).padStart(2, '0').toUpperCase()}`;
    return c;
  }).join(''));
const valueArb = fc.oneof(
  fc.constantFrom('2018-02-01', 'https%3A%2F%2Fvault.azure.net', 'https://vault.azure.net', 'a+b', '%', '%zz', '%C3%A9', '%E9', ''),
  fc.array(queryChar, { maxLength: 12 }).map((cs) => cs.join('').replaceAll('&', '')),
);
const segmentArb = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(keyArb, valueArb).map(([k, v]) => `${k}=${v}`) },
  { weight: 1, arbitrary: keyArb },
  { weight: 1, arbitrary: fc.constantFrom('', '=', '=x', 'a=b=c') },
);
const rawQueryArb = fc.array(segmentArb, { maxLength: 8 }).map((segments) => segments.join('&'));

t.test('parseQuery: keys recognised as spelled give what decoding and lower-casing give (property)', async (t) => {
  t.doesNotThrow(() => fc.assert(fc.property(rawQueryArb, (raw) => {
    const parsed = parseQuery(raw);
    const expected = referenceParse(raw);
    return typeof parsed === 'string' ? parsed === expected : isDeepStrictEqual([...parsed], expected);
  }), { numRuns: 3000 }));
  const mixed = parseQuery('API-Version=2018-02-01&resource=r&Client%5Fid=c');
  t.same(mixed instanceof Map ? [...mixed] : mixed, [['api-version', '2018-02-01'], ['resource', 'r'], ['client_id', 'c']]);
  t.equal(parseQuery('client_id=a&CLIENT_ID=b'), 'query_duplicate_parameter', 'a known key and its other spelling are one key');
  t.equal(parseQuery('client_id=a&client%5Fid=b'), 'query_duplicate_parameter', 'a known key and its escaped spelling are one key');
});

const SELECTOR_KEYS = ['client_id', 'object_id', 'msi_res_id', 'mi_res_id'] as const;

/** parseTokenRequest's selector rule, looking up every selector key. */
function referenceSelector(params: ReadonlyMap<string, string>): TokenRequest['selector'] | Reason {
  let selector: TokenRequest['selector'];
  for (const key of SELECTOR_KEYS) {
    const value = params.get(key);
    if (value === undefined) continue;
    if (selector !== undefined) return 'selector_multiple';
    if (value === '' || /[\u0000-\u001f\u007f-\u009f]/.test(value) || value.length > 2048) return 'parameter_invalid';
    selector = { name: key === 'mi_res_id' ? 'msi_res_id' : key, value };
  }
  return selector;
}

t.test('parseTokenRequest: stopping once every parameter is seen misses no selector (property)', async (t) => {
  const entry = fc.tuple(fc.constantFrom(...SELECTOR_KEYS, 'format', 'other'), fc.constantFrom('c1', '', '\u0001', 'x'));
  t.doesNotThrow(() => fc.assert(fc.property(fc.uniqueArray(entry, { selector: ([k]) => k, maxLength: 6 }), fc.boolean(), (entries, first) => {
    const base: Array<[string, string]> = [['api-version', '2018-02-01'], ['resource', 'https://vault.azure.net']];
    const params = new Map(first ? [...base, ...entries] : [...entries, ...base]);
    const got = parseTokenRequest(params);
    const selector = referenceSelector(params);
    if (typeof selector === 'string') return got === selector;
    return isDeepStrictEqual(got, { apiVersion: '2018-02-01', resource: 'https://vault.azure.net', selector });
  }), { numRuns: 2000 }));
});

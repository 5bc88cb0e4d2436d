import t from 'tap';
import fc from 'fast-check';
import { isCanonicalPath, matchTarget, type MatchedTarget } from '../src/matcher/request-target.ts';
import { formatQuery, MAX_QUERY_PARAMETERS, parseQuery } from '../src/matcher/query.ts';
import { isNearMissTokenPath, routeFor, ROUTES, type RouteName } from '../src/matcher/routes.ts';
import type { Reason } from '../src/decision/reasons.ts';

const TOKEN = '/metadata/identity/oauth2/token';
const Q = 'api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net';

/** A test-point name that keeps TAP output on one line whatever the target holds. */
function show(target: string): string {
  return JSON.stringify(target).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** The match, or a thrown error (which fails the calling test) naming the refusal. */
function matched(target: string, block = false): MatchedTarget {
  const m = matchTarget(target, block);
  if (typeof m === 'string') throw new Error(`${JSON.stringify(target)} refused as ${m}`);
  return m;
}

function refusal(target: string, block = false): Reason | RouteName {
  const m = matchTarget(target, block);
  return typeof m === 'string' ? m : m.route.name;
}

t.test('matchTarget: the token path', async (t) => {
  for (const target of [
    TOKEN, `${TOKEN}/`, '/METADATA/identity/oauth2/token', '/MetaData/identity/oauth2/token', '/mEtAdAtA/identity/oauth2/token/',
  ]) {
    const m = matched(`${target}?${Q}`);
    t.equal(m.route.name, 'token', target);
    t.equal(m.route, ROUTES.token, `${target}: the shared route object`);
    const rest = target.slice('/metadata'.length);
    t.equal(m.path, `/metadata${rest}`, `${target}: /metadata lower-cased, rest as received`);
    t.equal(m.rawQuery, Q, `${target}: raw query as received`);
  }
  const bare = matched(TOKEN);
  t.equal(bare.path, TOKEN);
  t.equal(bare.rawQuery, '', 'no ? gives an empty query');
  const emptyQuery = matched(`${TOKEN}?`);
  t.equal(emptyQuery.path, TOKEN);
  t.equal(emptyQuery.rawQuery, '');
});

t.test('matchTarget: rawQuery is split at the first ?', async (t) => {
  const m = matched(`${TOKEN}?a=1?b=2&c=?`);
  t.equal(m.path, TOKEN);
  t.equal(m.rawQuery, 'a=1?b=2&c=?');
  const pct = matched(`${TOKEN}?resource=a%2Fb%25`);
  t.equal(pct.rawQuery, 'resource=a%2Fb%25', 'percent-encoding in the query is left for parseQuery');
});

t.test('matchTarget: non-canonical targets are refused, never normalised', async (t) => {
  const cases = [
    'http://169.254.169.254/metadata/identity/oauth2/token',
    'HTTP://169.254.169.254/metadata/identity/oauth2/token',
    '169.254.169.254/metadata/identity/oauth2/token',
    '*',
    '',
    'metadata/identity/oauth2/token',
    '//metadata/identity/oauth2/token',
    '/metadata//identity/oauth2/token',
    '/metadata/identity/oauth2//token',
    '/metadata/identity/oauth2/token//',
    '/metadata/./identity/oauth2/token',
    '/./metadata/identity/oauth2/token',
    '/metadata/identity/../instance',
    '/metadata/identity/oauth2/token/..',
    '/metadata/identity/oauth2/token/.',
    '/metadata/instance/.',
    '/metadata/instance/..',
    '/metadata/..',
    '/metadata/.',
    '/..',
    '/.',
    '/metadata%2Fidentity/oauth2/token',
    '/metadata/identity%2foauth2/token',
    '/metadata/%2e%2e/instance',
    '/metadata/%2E/identity/oauth2/token',
    '/metadata/identity/oauth2/tok%65n',
    '/metadata/identity/oauth2/token%',
    '/metadata/identity/oauth2/token%20',
    '/metadata\\identity\\oauth2\\token',
    '/metadata/identity/oauth2/token\\',
    '/metadata/identity/oauth2/token#x',
    '/metadata/identity/oauth2/token#',
    `${TOKEN}?${Q}#frag`,
    `${TOKEN}?#`,
    '/metadata/identity/oauth2/token ',
    '/metadata/identity/oauth2/to ken',
    '/metadata/identity/oauth2/token\t',
    '/metadata/identity/oauth2/token\u0000',
    '/metadata/identity/oauth2/token\r\n',
    '/metadata/identity/oauth2/token\u001f',
    '/metadata/identity/oauth2/token\u007f',
    '/metadata/identity/oauth2/tokén',
    '/metadata/identity/oauth2/token\u0080',
    '/metadata/identity/oauth2/token\u00a0',
    '/metadata/identity/oauth2/token\u2028',
    '/metadata/ıdentity/oauth2/token',
  ];
  for (const target of cases) {
    t.equal(matchTarget(target, false), 'target_not_canonical', show(target));
    // the blocking switch changes nothing about canonical form
    t.equal(matchTarget(target, true), 'target_not_canonical', `${show(target)} (blocking)`);
  }
});

t.test('isCanonicalPath: segment rules', async (t) => {
  t.ok(isCanonicalPath('/'), 'the root');
  t.ok(isCanonicalPath('/metadata/'), 'a trailing slash');
  t.ok(isCanonicalPath('/metadata/instance/.hidden'), 'a segment that starts with a dot');
  t.ok(isCanonicalPath('/metadata/instance/..x'), 'a segment that starts with two dots');
  t.ok(isCanonicalPath('/metadata/instance/...'), 'three dots are a name, not a traversal');
  t.ok(isCanonicalPath('/metadata/a.b/c..d'), 'dots inside a segment');
  t.notOk(isCanonicalPath('/a/./b'));
  t.notOk(isCanonicalPath('/a/../b'));
  t.notOk(isCanonicalPath('/a//b'));
  t.notOk(isCanonicalPath('/a/.'));
  t.notOk(isCanonicalPath('/a/..'));
  t.notOk(isCanonicalPath('/a/~%7e'));
});

t.test('matchTarget: near-miss token paths', async (t) => {
  for (const target of [
    '/metadata/identity/oauth2/token/extra',
    '/metadata/identity/oauth2/token/x/',
    '/metadata/Identity/OAuth2/Token',
    '/METADATA/IDENTITY/OAUTH2/TOKEN',
    '/metadata/identityX/oauth2/token',
    '/metadata/identity/oauth2token',
    '/metadata/identity/oauth2/tokens',
    '/metadata/identity/oauth2/v2.0/token',
  ]) {
    t.equal(matchTarget(`${target}?${Q}`, false), 'token_path_malformed', target);
  }
  const info = matchTarget('/metadata/identity/info', false);
  t.equal(typeof info === 'string' ? info : info.route.name, 'identity_info', 'identity/info is its own route');
  for (const target of ['/metadata/identity', '/metadata/identity/', '/metadata/identity/oauth2', '/metadata/identity/token',
    '/metadata/oauth2/token', '/metadata/token/identity/oauth2']) {
    t.equal(matchTarget(target, false), 'route_unknown', target);
  }
  t.ok(isNearMissTokenPath('/IDENTITY/x/OAUTH2/y/TOKEN'));
  t.notOk(isNearMissTokenPath('/identity/token/oauth2'), 'token must come after oauth2');
  t.notOk(isNearMissTokenPath('/xidentity/oauth2/token'));
});

t.test('matchTarget: the other routes', async (t) => {
  const cases: Array<[string, RouteName]> = [
    ['/metadata/instance', 'instance'],
    ['/metadata/instance/', 'instance'],
    ['/metadata/instance/compute', 'instance'],
    ['/metadata/instance/compute/tagsList', 'instance'],
    ['/metadata/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress', 'instance'],
    ['/METADATA/instance', 'instance'],
    ['/metadata/attested/document', 'attested'],
    ['/metadata/identity/info', 'identity_info'],
    ['/metadata/scheduledevents', 'scheduledevents'],
    ['/metadata/loadbalancer', 'loadbalancer'],
    ['/metadata/versions', 'versions'],
  ];
  for (const [target, name] of cases) {
    const m = matched(`${target}?api-version=2021-02-01&format=json`);
    t.equal(m.route.name, name, target);
    t.equal(m.path, '/metadata' + target.slice('/metadata'.length), `${target}: path`);
    t.equal(m.rawQuery, 'api-version=2021-02-01&format=json', `${target}: query`);
  }
  t.same([...ROUTES.scheduledevents.methods].sort(), ['GET', 'POST'], 'scheduled events are acknowledged by POST');
  for (const name of ['token', 'instance', 'attested', 'identity_info', 'loadbalancer', 'versions'] as const) {
    t.same(ROUTES[name].methods, ['GET'], `${name}: GET only`);
  }
  t.equal(ROUTES.versions.needsApiVersion, false, 'versions needs no api-version');
  for (const name of ['token', 'instance', 'attested', 'identity_info', 'scheduledevents', 'loadbalancer'] as const) {
    t.equal(ROUTES[name].needsApiVersion, true, `${name} needs api-version`);
  }
  t.equal(routeFor('/instance'), ROUTES.instance);
  t.equal(routeFor('/instancex'), undefined, 'only /instance/ sub-paths, not a longer name');
  t.equal(routeFor('/attested/document/'), undefined, 'exact paths only');
});

t.test('matchTarget: unknown routes', async (t) => {
  for (const target of [
    '/metadata/foo', '/foo', '/metadataX', '/metadataX/identity/oauth2/token', '/metadat', '/', '/metadata', '/metadata/',
    '/metadata?api-version=2018-02-01', '/metadata/instancex', '/metadata/INSTANCE', '/metadata/versions/',
    '/metadata/attested', '/metadata/attested/document/x', '/identity/oauth2/token', '/x/metadata/identity/oauth2/token',
  ]) {
    t.equal(matchTarget(target, false), 'route_unknown', target);
  }
});

t.test('matchTarget: blockInstanceMetadata', async (t) => {
  for (const target of ['/metadata/instance', '/metadata/instance/', '/metadata/instance/compute', '/METADATA/instance/compute/name']) {
    t.equal(matchTarget(`${target}?api-version=2021-02-01`, true), 'instance_metadata_blocked', target);
    t.equal(refusal(`${target}?api-version=2021-02-01`, false), 'instance', `${target} unblocked`);
  }
  for (const [target, name] of [
    [`${TOKEN}?${Q}`, 'token'], ['/metadata/attested/document', 'attested'], ['/metadata/identity/info', 'identity_info'],
    ['/metadata/scheduledevents', 'scheduledevents'], ['/metadata/loadbalancer', 'loadbalancer'], ['/metadata/versions', 'versions'],
  ] as const) {
    t.equal(refusal(target, true), name, `${target} unaffected by blocking`);
  }
  t.equal(matchTarget('/metadata/instancex', true), 'route_unknown', 'an unknown route stays unknown');
});

t.test('parseQuery: basics', async (t) => {
  const empty = parseQuery('');
  t.ok(empty instanceof Map);
  t.equal((empty as Map<string, string>).size, 0);

  t.same(parseQuery('API-Version=2018-02-01&Resource=X'), new Map([['api-version', '2018-02-01'], ['resource', 'X']]),
    'keys lower-cased, values untouched');
  t.same(parseQuery('resource=https%3A%2F%2Fvault.azure.net%2F&a=b+c&d=e%2Bf&g=%20'),
    new Map([['resource', 'https://vault.azure.net/'], ['a', 'b c'], ['d', 'e+f'], ['g', ' ']]), 'percent and + decoding');
  t.same(parseQuery('a=%25%32%30'), new Map([['a', '%20']]), 'decoded once, not twice');
  t.same(parseQuery('a=%C3%A9%E2%82%AC'), new Map([['a', 'é€']]), 'UTF-8 percent-encoding');
  t.same(parseQuery('a&&b=1&'), new Map([['a', ''], ['b', '1']]), 'empty segments skipped, bare key has value ""');
  t.same(parseQuery('&&&'), new Map(), 'only separators');
  t.same(parseQuery('a='), new Map([['a', '']]), 'key with = and nothing after');
  t.same(parseQuery('a=b=c'), new Map([['a', 'b=c']]), 'value split at the first =');
  t.same(parseQuery('a+b=1'), new Map([['a b', '1']]), '+ in the key');
  t.same(parseQuery('client%5Fid=x'), new Map([['client_id', 'x']]), 'encoded key decoded');
  t.same(parseQuery('A%42C=1'), new Map([['abc', '1']]), 'key lower-cased after decoding');
});

t.test('parseQuery: duplicates', async (t) => {
  for (const raw of [
    'client_id=a&client_id=b',
    'client_id=a&client_id=a',
    'Client_ID=a&client_id=b',
    'client_id=a&CLIENT_ID=b',
    'client%5Fid=a&client_id=b',
    'client_id=a&client%5fid=b',
    'client%5Fid=a&CLIENT%5FID=b',
    'a&a',
    'a=1&b=2&A',
    'a+b=1&a%20b=2',
  ]) {
    t.equal(parseQuery(raw), 'query_duplicate_parameter', raw);
  }
});

t.test('parseQuery: malformed', async (t) => {
  for (const raw of [
    'a=%', 'a=%2', 'a=%zz', 'a=%G0', '%=1', 'a%=1', 'a=1&b=%E2%82', 'a=%ED%A0%80', 'a=%C0%AF', 'a=%FF',
    '=x', '=', '=&a=1', 'a=1&=2', '%20=1&=',
  ]) {
    t.equal(parseQuery(raw), 'query_malformed', raw);
  }
});

t.test('parseQuery: the parameter bound', async (t) => {
  const keys = (n: number): string => Array.from({ length: n }, (_, i) => `k${i}=v`).join('&');
  const atLimit = parseQuery(keys(MAX_QUERY_PARAMETERS));
  t.ok(atLimit instanceof Map, `${MAX_QUERY_PARAMETERS} distinct keys are accepted`);
  t.equal((atLimit as Map<string, string>).size, MAX_QUERY_PARAMETERS);
  t.equal(parseQuery(keys(MAX_QUERY_PARAMETERS + 1)), 'query_malformed', 'one more is refused');
  t.equal(parseQuery(keys(10_000)), 'query_malformed', 'many more are refused');
  t.ok(parseQuery(keys(MAX_QUERY_PARAMETERS) + '&&&&') instanceof Map, 'empty segments do not count');
});

t.test('formatQuery', async (t) => {
  t.equal(formatQuery([]), '');
  t.equal(formatQuery(new Map([['api-version', '2018-02-01'], ['resource', 'https://vault.azure.net/']])),
    'api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net%2F');
  t.equal(formatQuery([['a', 'x&y=z'], ['b', ' +#%']]), 'a=x%26y%3Dz&b=%20%2B%23%25', 'separators and specials are encoded');
  t.equal(formatQuery([['a', '']]), 'a=');
});

t.test('formatQuery/parseQuery round-trip (property)', async (t) => {
  const key = fc.string({ unit: 'binary', minLength: 1, maxLength: 12 }).filter((k) => k.toLowerCase() === k);
  const value = fc.string({ unit: 'binary', maxLength: 40 });
  const asciiKey = fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 12 }).map((k) => k.toLowerCase());
  const asciiValue = fc.string({ unit: 'binary-ascii', maxLength: 40 });
  for (const [k, v, label] of [[key, value, 'unicode'], [asciiKey, asciiValue, 'ascii']] as const) {
    const entries = fc.uniqueArray(fc.tuple(k, v), { selector: ([name]) => name, maxLength: MAX_QUERY_PARAMETERS });
    t.doesNotThrow(() => fc.assert(fc.property(entries, (list) => {
      const m = new Map(list);
      const parsed = parseQuery(formatQuery(m));
      if (!(parsed instanceof Map)) return false;
      return parsed.size === m.size && [...m].every(([name, val]) => parsed.get(name) === val)
        && [...parsed.keys()].join('\u0000') === [...m.keys()].join('\u0000');
    }), { numRuns: 500 }), label);
  }
});

import t from 'tap';
import { isApiVersion, isPlainValue, parseTokenRequest, type TokenRequest } from '../src/decision/token-request.ts';
import type { Reason } from '../src/decision/reasons.ts';

const API = '2018-02-01';
const RESOURCE = 'https://management.azure.com/';

function req(params: Record<string, string>): TokenRequest | Reason {
  return parseTokenRequest(new Map(Object.entries(params)));
}

t.test('api-version', async (t) => {
  t.equal(req({ resource: RESOURCE }), 'api_version_missing', 'absent');
  t.equal(req({ 'api-version': '', resource: RESOURCE }), 'api_version_missing', 'empty');
  t.equal(req({}), 'api_version_missing', 'checked before resource');
  for (const bad of [
    '2018-02', '2018-2-1', '2018', '1', '2018-02-01 ', ' 2018-02-01', '2018 02 01', '2018-02-01&x', '2018-02-01&resource=x',
    '2021-12-13-PREVIEW', '2021-12-13-Preview', 'ABCDEFGHIJ', '2018_02_01', '2018.02.01', '2018/02/01', '2018-02-01\n',
    '2018-02-01\u0000', '2018-02-01%20', '２０１８-02-01', 'x'.repeat(33), '2018-02-01-' + 'a'.repeat(22),
  ]) {
    t.equal(req({ 'api-version': bad, resource: RESOURCE }), 'api_version_invalid', JSON.stringify(bad));
  }
  for (const good of [API, '2019-08-01', '2021-12-13-preview', '2017-12-01', '2018-02-01-' + 'a'.repeat(21)]) {
    const r = req({ 'api-version': good, resource: RESOURCE });
    t.strictSame(r, { apiVersion: good, resource: RESOURCE, selector: undefined }, good);
  }
  t.ok(isApiVersion('aaaaaaaaaa'), 'ten characters is the shortest');
  t.notOk(isApiVersion('aaaaaaaaa'), 'nine is too short');
  t.ok(isApiVersion('a'.repeat(32)), '32 is the longest');
  t.notOk(isApiVersion('a'.repeat(33)));
});

t.test('resource', async (t) => {
  t.equal(req({ 'api-version': API }), 'resource_missing', 'absent');
  t.equal(req({ 'api-version': API, resource: '' }), 'resource_missing', 'empty');
  for (const bad of ['a\u0000b', 'https://x/\r\n', '\t', 'x\u001f', 'x\u007f', 'x'.repeat(2049)]) {
    t.equal(req({ 'api-version': API, resource: bad }), 'parameter_invalid', JSON.stringify(bad.slice(0, 20)));
  }
  const long = 'x'.repeat(2048);
  t.strictSame(req({ 'api-version': API, resource: long }), { apiVersion: API, resource: long, selector: undefined }, '2048 characters pass');
  const spaced = 'https://vault.azure.net api://é';
  t.strictSame(req({ 'api-version': API, resource: spaced }), { apiVersion: API, resource: spaced, selector: undefined },
    'spaces and non-ASCII are not control characters');
  t.ok(isPlainValue(''));
  t.notOk(isPlainValue('\u0001'));
  t.ok(isPlainValue(' ~'));
});

t.test('each selector key', async (t) => {
  const cases = [
    ['client_id', 'client_id', '11111111-1111-4111-8111-111111111111'],
    ['object_id', 'object_id', '22222222-2222-4222-8222-222222222222'],
    ['msi_res_id', 'msi_res_id', '/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/one'],
    ['mi_res_id', 'msi_res_id', '/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/two'],
  ] as const;
  for (const [key, name, value] of cases) {
    t.strictSame(req({ 'api-version': API, resource: RESOURCE, [key]: value }),
      { apiVersion: API, resource: RESOURCE, selector: { name, value } }, `${key} -> ${name}`);
    t.equal(req({ 'api-version': API, resource: RESOURCE, [key]: '' }), 'parameter_invalid', `${key} empty`);
    t.equal(req({ 'api-version': API, resource: RESOURCE, [key]: 'a\nb' }), 'parameter_invalid', `${key} with a control character`);
    t.equal(req({ 'api-version': API, resource: RESOURCE, [key]: 'x'.repeat(2049) }), 'parameter_invalid', `${key} too long`);
  }
});

t.test('two selectors', async (t) => {
  const keys = ['client_id', 'object_id', 'msi_res_id', 'mi_res_id'];
  let pairs = 0;
  for (let i = 0; i < keys.length; i++) {
    for (let j = i + 1; j < keys.length; j++) {
      const a = keys[i]!;
      const b = keys[j]!;
      t.equal(req({ 'api-version': API, resource: RESOURCE, [a]: 'x', [b]: 'y' }), 'selector_multiple', `${a} + ${b}`);
      t.equal(req({ 'api-version': API, resource: RESOURCE, [b]: 'same', [a]: 'same' }), 'selector_multiple',
        `${b} + ${a}, same value`);
      pairs++;
    }
  }
  t.equal(pairs, 6, 'every pair was checked');
  t.equal(req({ 'api-version': API, resource: RESOURCE, client_id: 'a', object_id: 'b', msi_res_id: 'c', mi_res_id: 'd' }),
    'selector_multiple', 'all four');
});

t.test('unknown parameters are dropped', async (t) => {
  const r = req({
    'api-version': API, resource: RESOURCE, client_id: 'c', bypass_cache: 'true', authority: 'https://evil', 'x-ms-foo': '\u0000',
  });
  t.strictSame(r, { apiVersion: API, resource: RESOURCE, selector: { name: 'client_id', value: 'c' } });
  t.same(Object.keys(r as TokenRequest).sort(), ['apiVersion', 'resource', 'selector'], 'nothing else rides along');
});

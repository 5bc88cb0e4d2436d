// Public face of the IMDS emulator: a fake Azure Instance Metadata Service on loopback that
// follows the token contract (REFERENCE §1) closely enough to test the interceptor against.
export type { EmulatedIdentity, EmulatorOptions, Fault, ImdsEmulator, RateLimit, RecordedRequest } from './types.ts';
export { startImdsEmulator } from './emulator-server.ts';
export { runEmulatorCli, DEFAULT_EMULATOR_LISTEN } from './emulator-cli.ts';
export type { EmulatorCliIo } from './emulator-cli.ts';
export { decodeFakeToken } from './fake-token.ts';
export type { FakeTokenClaims } from './fake-token.ts';
export { DEFAULT_SYSTEM_ASSIGNED, DEFAULT_USER_ASSIGNED } from './default-identities.ts';

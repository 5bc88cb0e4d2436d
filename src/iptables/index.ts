export { InterceptionRules, InterceptionStopped } from './interception.ts';
export type { InterceptionOptions, InterceptionStatus, PartStatus } from './interception.ts';
export { cleanupInterception } from './cleanup.ts';
export type { CleanupOptions, CleanupResult } from './cleanup.ts';
export type { Backend } from './backend.ts';
export { CHAIN, desiredChainRules, JUMP_RULE } from './rules.ts';

export { cleanupInterception, InterceptionRules, InterceptionStopped } from './interception.ts';
export type { CleanupOptions, CleanupResult, InterceptionOptions, InterceptionStatus, PartStatus } from './interception.ts';
export type { Backend } from './backend.ts';
export { CHAIN, desiredChainRules, JUMP_RULE } from './rules.ts';

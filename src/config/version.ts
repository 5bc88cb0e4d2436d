// The daemon's version, from package.json (two levels up from both src/config and dist/config).
import { readFileSync } from 'node:fs';

export const VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** `podid-nmi/<version>`, then --custom-user-agent if given, as NMI appended its own. */
export function userAgent(custom: string): string {
  return custom === '' ? `podid-nmi/${VERSION}` : `podid-nmi/${VERSION} ${custom}`;
}

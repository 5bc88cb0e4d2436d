// Relative links and anchors in the project's Markdown, resolved as GitHub renders them.
import { readFileSync, existsSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';

/** GitHub's heading slug (github-slugger): lower case, punctuation dropped, spaces to hyphens. */
export function slug(heading: string): string {
  const text = heading
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1') // a link in a heading keeps its text
    .replace(/<[^>]+>/g, '')
    .replace(/[*`]/g, ''); // emphasis and code marks are not text (underscores are: snake_case names)
  return text.trim().toLowerCase().replace(/[^\p{L}\p{M}\p{N}\p{Pc}\- ]/gu, '').replace(/ /g, '-');
}

/** Every anchor a Markdown file defines: headings (with GitHub's -1, -2 suffixes) and explicit ids. */
export function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) { fenced = !fenced; continue; }
    if (fenced) continue;
    for (const m of line.matchAll(/<a\s+(?:name|id)="([^"]+)"/g)) out.add(m[1]!);
    const h = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (h === null) continue;
    const base = slug(h[1]!);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

export interface Link { file: string; line: number; target: string }

/** The links of a Markdown file that stay inside the repository (no scheme, not mailto). */
export function relativeLinks(file: string): Link[] {
  const links: Link[] = [];
  let fenced = false;
  readFileSync(file, 'utf8').split('\n').forEach((line, i) => {
    if (/^\s*(```|~~~)/.test(line)) { fenced = !fenced; return; }
    if (fenced) return;
    const prose = line.replace(/`[^`]*`/g, '');
    for (const m of prose.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      const target = m[1]!;
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue;
      links.push({ file, line: i + 1, target });
    }
  });
  return links;
}

/** Why a link does not resolve, or undefined when it does. `root` bounds the repository. */
export function brokenReason(root: string, from: string, target: string): string | undefined {
  const [path, anchor] = target.split('#', 2) as [string, string | undefined];
  const file = path === '' ? from : join(dirname(from), decodeURIComponent(path));
  if (relative(root, file).startsWith('..')) return `${path} leaves the repository`;
  if (!existsSync(file)) return `${path} does not exist`;
  if (anchor === undefined || anchor === '') return undefined;
  if (statSync(file).isDirectory() || !file.endsWith('.md')) return `#${anchor} on a file that is not Markdown`;
  return anchors(readFileSync(file, 'utf8')).has(decodeURIComponent(anchor)) ? undefined : `${relative(root, file)} has no heading #${anchor}`;
}

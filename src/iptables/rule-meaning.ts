// What an `iptables -S` line means, independent of how one iptables build prints it. Both
// flavours print a string bare when it holds only [A-Za-z0-9_-] and quoted otherwise
// (`--path kubepods` but `--path "kubepods.slice"`), and rules written by hand or by another
// version differ in option order, long or short option names, `/32` masks and the implicit
// `-m tcp` of `-p tcp --dport`. Comparing the printed text made a cgroupfs node (`--path
// kubepods`) look drifted on every check; comparing meanings does not.

/** Splits one `iptables -S` line into words, undoing iptables-save's quoting. */
export function ruleWords(line: string): string[] {
  const words: string[] = [];
  let i = 0;
  while (i < line.length) {
    while (line[i] === ' ' || line[i] === '\t') i++;
    if (i >= line.length) break;
    let word = '';
    let quoted = false;
    while (i < line.length && (quoted || (line[i] !== ' ' && line[i] !== '\t'))) {
      const c = line[i]!;
      if (c === '"') {
        quoted = !quoted;
      } else if (c === '\\' && quoted && (line[i + 1] === '"' || line[i + 1] === '\\')) {
        word += line[i + 1];
        i++;
      } else {
        word += c;
      }
      i++;
    }
    words.push(word);
  }
  return words;
}

/** How iptables-restore reads a word back: bare when iptables-save would print it bare. */
export function quoteWord(word: string): string {
  return /^[A-Za-z0-9_-]+$/.test(word) ? word : `"${word.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

const LONG_NAMES: Record<string, string> = {
  '--append': '-A', '--source': '-s', '--src': '-s', '--destination': '-d', '--dst': '-d', '--protocol': '-p',
  '--jump': '-j', '--goto': '-g', '--match': '-m', '--in-interface': '-i', '--out-interface': '-o',
  '--destination-port': '--dport', '--source-port': '--sport',
};
const ADDRESS_OPTIONS = new Set(['-s', '-d']);

interface Clause {
  negated: boolean;
  option: string;
  values: string[];
}

function clauses(words: readonly string[]): Clause[] {
  const out: Clause[] = [];
  let negated = false;
  for (const word of words) {
    if (word === '!') {
      negated = true;
    } else if (word.startsWith('-') && !/^-\d/.test(word)) {
      out.push({ negated, option: LONG_NAMES[word] ?? word, values: [] });
      negated = false;
    } else if (out.length > 0) {
      out.at(-1)!.values.push(word);
    }
  }
  return out;
}

function normalValue(c: Clause, v: string): string {
  if (ADDRESS_OPTIONS.has(c.option) && !v.includes('/')) return `${v}/32`;
  if (c.option === '-p') return v.toLowerCase();
  return v;
}

/**
 * A canonical key of the rule's meaning: the chain, the matches as an unordered set (a rule
 * matches when all of them do, whatever their order) without the `-m tcp`/`-m udp` that
 * `-p tcp`/`-p udp` imply, then the target and its options in order.
 */
export function ruleMeaning(line: string): string {
  const all = clauses(ruleWords(line));
  const target = all.findIndex((c) => c.option === '-j' || c.option === '-g');
  const matches = (target === -1 ? all : all.slice(0, target)).map((c) => ({ ...c, values: c.values.map((v) => normalValue(c, v)) }));
  const protocol = matches.find((c) => c.option === '-p' && !c.negated)?.values[0];
  const kept = matches.filter((c) => !(c.option === '-m' && !c.negated && c.values[0] === protocol));
  const key = (c: Clause): string => `${c.negated ? '!' : ''}${c.option} ${c.values.join(' ')}`;
  const head = kept.filter((c) => c.option === '-A').map(key);
  const rest = kept.filter((c) => c.option !== '-A').map(key).sort();
  const tail = target === -1 ? [] : all.slice(target).map(key);
  return [...head, ...rest, '=>', ...tail].join(' | ');
}

/** Whether two rule lists say the same, rule by rule, in order. */
export function sameRules(found: readonly string[], desired: readonly string[]): boolean {
  return found.length === desired.length && found.every((line, i) => ruleMeaning(line) === ruleMeaning(desired[i]!));
}

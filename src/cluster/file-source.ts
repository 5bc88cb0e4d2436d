// Cluster state from a multi-document YAML file of Pods, AzureIdentities, bindings and
// exceptions, as `kubectl get -o yaml` prints them (a `kind: List` is unrolled).
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { ConversionError, toClusterObject } from './convert.ts';
import type { ClusterObject } from './objects.ts';
import { IndexedClusterState } from './indexed-state.ts';

// Loaded on first use: a daemon fed by the informers never parses YAML, and the package is
// about 70 modules (docs/performance.md, Memory).
const require = createRequire(import.meta.url);
let yaml: typeof import('yaml') | undefined;

export class StateFileError extends Error {
  override name = 'StateFileError';
}

/** Parses the file's text into cluster objects; throws StateFileError naming the document. */
export function parseStateDocuments(text: string, file: string): ClusterObject[] {
  const out: ClusterObject[] = [];
  yaml ??= require('yaml') as typeof import('yaml');
  const docs = yaml.parseAllDocuments(text, { uniqueKeys: true });
  const list = Array.isArray(docs) ? docs : [docs];
  list.forEach((doc, i) => {
    const where = `${file}: document ${i + 1}`;
    if (doc.errors.length > 0) throw new StateFileError(`${where}: ${doc.errors[0]!.message.split('\n')[0]}`);
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      // An alias bomb, among others: the file is refused, not the process crashed.
      throw new StateFileError(`${where}: ${(err as Error).message}`);
    }
    if (value === null || value === undefined) return;
    const items = isList(value) ? value.items : [value];
    items.forEach((item, j) => {
      const label = isList(value) ? `${where}, item ${j + 1}` : where;
      try {
        const entry = toClusterObject(item);
        if (entry === undefined) throw new ConversionError(`unsupported kind ${JSON.stringify((item as { kind?: unknown }).kind)}`);
        out.push(entry);
      } catch (err) {
        if (err instanceof ConversionError || err instanceof TypeError) throw new StateFileError(`${label}: ${(err as Error).message}`);
        throw err;
      }
    });
  });
  return out;
}

function isList(value: unknown): value is { items: unknown[] } {
  return typeof value === 'object' && value !== null && (value as { kind?: unknown }).kind === 'List'
    && Array.isArray((value as { items?: unknown }).items);
}

export class FileClusterState extends IndexedClusterState {
  /** With `nodeName`, pods scheduled on other nodes are left out, as the informer's field selector does. */
  constructor(objects: readonly ClusterObject[], nodeName = '') {
    super();
    for (const entry of objects) {
      if (entry.kind === 'Pod' && nodeName !== '' && entry.object.nodeName !== '' && entry.object.nodeName !== nodeName) continue;
      this.index.upsert(entry);
    }
  }

  static async load(file: string, nodeName = ''): Promise<FileClusterState> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw new StateFileError(`${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    return new FileClusterState(parseStateDocuments(text, file), nodeName);
  }

  isReady(): boolean {
    return true;
  }

  whenReady(): Promise<void> {
    return Promise.resolve();
  }

  async close(): Promise<void> {}
}

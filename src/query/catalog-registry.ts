// Owns one DatabaseCatalog per upstream database for the result cache: loaded on first use in
// the background (until then nothing there is cached), dropped when DDL may have changed it,
// and read again when a query names a relation it does not know.
import { logger } from '../observe/logger.js';
import { type CatalogQuery, DatabaseCatalog } from './catalog.js';

export interface CatalogConnection extends CatalogQuery {
  end(): Promise<void>;
}

interface Slot {
  catalog: DatabaseCatalog | undefined;
  loading: boolean;
  /** Bumped by every invalidation: a load that started earlier may have read the old schema. */
  generation: number;
  lastLoadStart: number;
}

const REFRESH_MIN_INTERVAL_MS = 1000;

export class CatalogRegistry {
  private readonly slots = new Map<string, Slot>();
  private closed = false;
  readonly stats = { loads: 0, failures: 0 };
  /** Called once per database, the first time it is asked about. */
  onFirstUse: ((database: string) => void) | undefined;

  constructor(private readonly connect: (database: string) => Promise<CatalogConnection>) {}

  /** The catalog of `database` if loaded; otherwise starts loading it and returns undefined. */
  get(database: string): DatabaseCatalog | undefined {
    const slot = this.slot(database);
    // After a failure, try again at most once a second rather than once per query.
    if (!slot.catalog && !slot.loading && Date.now() - slot.lastLoadStart >= REFRESH_MIN_INTERVAL_MS) {
      this.load(database, slot);
    }
    return slot.catalog;
  }

  /** The schema may have changed: forget the catalog; the next get() reads it again. */
  invalidate(database: string): void {
    const slot = this.slot(database);
    slot.generation++;
    slot.catalog = undefined;
    slot.lastLoadStart = 0;
  }

  /** A relation was not found: read the catalog again, at most once a second. */
  refreshSoon(database: string): void {
    const slot = this.slot(database);
    if (slot.loading || Date.now() - slot.lastLoadStart < REFRESH_MIN_INTERVAL_MS) return;
    slot.generation++;
    this.load(database, slot);
  }

  close(): void {
    this.closed = true;
  }

  private slot(database: string): Slot {
    let slot = this.slots.get(database);
    if (!slot) {
      slot = { catalog: undefined, loading: false, generation: 0, lastLoadStart: 0 };
      this.slots.set(database, slot);
      this.onFirstUse?.(database);
    }
    return slot;
  }

  private load(database: string, slot: Slot): void {
    if (this.closed) return;
    slot.loading = true;
    slot.lastLoadStart = Date.now();
    const generation = slot.generation;
    this.stats.loads++;
    void (async () => {
      let connection: CatalogConnection | undefined;
      try {
        connection = await this.connect(database);
        const catalog = await DatabaseCatalog.load(connection);
        if (slot.generation === generation) slot.catalog = catalog;
      } catch (err) {
        this.stats.failures++;
        logger.warn(
          { database, err: (err as Error).message },
          'could not read the catalog: results there are not cached',
        );
      } finally {
        slot.loading = false;
        await connection?.end().catch(() => {});
      }
    })();
  }
}

/** A fixed-size buffer keeping the latest `capacity` values: memory stays bounded whatever the traffic. */
export class Ring<T> {
  readonly #items: (T | undefined)[];
  #next = 0;
  #size = 0;

  constructor(readonly capacity: number) {
    if (!(Number.isInteger(capacity) && capacity > 0)) throw new RangeError(`Expected \`capacity\` to be a positive integer, got \`${capacity}\``);
    this.#items = new Array<T | undefined>(capacity);
  }

  get size(): number {
    return this.#size;
  }

  push(value: T): void {
    this.#items[this.#next] = value;
    this.#next = (this.#next + 1) % this.capacity;
    if (this.#size < this.capacity) this.#size++;
  }

  /** Oldest first. */
  toArray(): T[] {
    const out: T[] = new Array<T>(this.#size);
    const start = (this.#next - this.#size + this.capacity) % this.capacity;
    for (let i = 0; i < this.#size; i++) out[i] = this.#items[(start + i) % this.capacity] as T;
    return out;
  }
}

/** The `q` quantile (0–1) of `values` by the nearest-rank method; undefined for none. */
export function quantile(values: readonly number[], q: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

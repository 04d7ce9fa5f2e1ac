// One progress display for long work (collect, train, calibrate, validate, `polar run`): on a TTY a single
// bar redrawn in place with rate and ETA; otherwise (CI, pipes, log files) plain lines at most every
// `intervalMs` or every 10% and one line at the end. Progress goes to stderr; stdout stays machine-readable.
//
//   const display = createProgress();               // or silentProgress in tests
//   const task = display.task('collect', 'tok');
//   task.start(200_000, alreadyDone);              // work resumed from an earlier run does not count for the rate
//   task.advance(2048);                            // as work completes
//   task.log('note that does not break the bar');
//   task.end('200000 tokens in 74.1 s');          // final line
//   display.close();

export interface ProgressTask {
  /** total units, and how many were done before this run started (counted in %, not in the rate) */
  start(total: number, done?: number): void;
  advance(n: number): void;
  /** sets the done count (e.g. when work is counted elsewhere) */
  set(done: number): void;
  /** extra text after the numbers (e.g. "layer 3/4") */
  note(text: string): void;
  log(msg: string): void;
  end(summary?: string): void;
  readonly done: number;
  readonly total: number;
}

export interface ProgressDisplay {
  task(label: string, unit?: string): ProgressTask;
  log(msg: string): void;
  close(): void;
}

export interface ProgressOptions {
  stream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** force the TTY bar on or off (default: stream.isTTY) */
  tty?: boolean;
  /** plain mode: at most one line per this many ms (default 15000) */
  intervalMs?: number;
  /** clock for tests */
  now?: () => number;
}

export function formatCount(n: number): string {
  const a = Math.abs(n);
  if (a >= 1e9) return `${(n / 1e9).toFixed(a >= 1e10 ? 1 : 2)}G`;
  if (a >= 1e6) return `${(n / 1e6).toFixed(a >= 1e7 ? 1 : 2)}M`;
  if (a >= 1e4) return `${(n / 1e3).toFixed(a >= 1e5 ? 0 : 1)}k`;
  return String(Math.round(n));
}

export function formatDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  const t = Math.round(s);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = t % 60;
  if (h) return `${h}h${String(m).padStart(2, '0')}m`;
  if (m) return `${m}m${String(sec).padStart(2, '0')}s`;
  return `${sec}s`;
}

export function formatBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${n} B`;
}

class Task implements ProgressTask {
  total = 0;
  done = 0;
  private base = 0;
  private t0 = 0;
  private extra = '';
  private lastPlain = 0;
  private lastPlainFrac = 0;
  private lastDraw = 0;
  ended = false;
  started = false;

  constructor(
    private readonly d: Display,
    readonly label: string,
    readonly unit: string,
  ) {}

  start(total: number, done = 0): void {
    this.total = total;
    this.done = done;
    this.base = done;
    this.t0 = this.d.now();
    this.lastPlain = this.t0;
    this.lastPlainFrac = total > 0 ? done / total : 0;
    this.d.active = this;
    this.started = true;
    if (!this.d.tty) {
      this.d.line(`${this.label}: ${done ? `resuming at ${formatCount(done)}/` : '0/'}${formatCount(total)} ${this.unit}`);
    }
    this.draw(true);
  }

  advance(n: number): void {
    this.set(this.done + n);
  }

  set(done: number): void {
    this.done = done;
    this.draw(false);
  }

  note(text: string): void {
    this.extra = text;
    this.draw(false);
  }

  rate(): number {
    const dt = (this.d.now() - this.t0) / 1000;
    return dt > 0 ? (this.done - this.base) / dt : 0;
  }

  status(): string {
    const r = this.rate();
    const left = this.total - this.done;
    const eta = r > 0 ? formatDuration(left / r) : '?';
    const pct = this.total > 0 ? ((100 * this.done) / this.total).toFixed(1) : '0.0';
    return `${pct}% ${formatCount(this.done)}/${formatCount(this.total)} ${this.unit} · ${formatCount(r)} ${this.unit}/s · ETA ${eta}${this.extra ? ` · ${this.extra}` : ''}`;
  }

  draw(force: boolean): void {
    if (this.ended || !this.started) return;
    const now = this.d.now();
    if (this.d.tty) {
      if (!force && now - this.lastDraw < 100 && this.done < this.total) return;
      this.lastDraw = now;
      const frac = this.total > 0 ? Math.min(1, this.done / this.total) : 0;
      const cols = this.d.columns();
      const text = this.status();
      const width = Math.max(10, Math.min(30, cols - text.length - this.label.length - 5));
      const full = Math.floor(frac * width);
      const bar = '█'.repeat(full) + (full < width ? '░'.repeat(width - full) : '');
      this.d.redraw(`${this.label} ${bar} ${text}`.slice(0, cols - 1));
      return;
    }
    const frac = this.total > 0 ? this.done / this.total : 0;
    if (force) return;
    if (now - this.lastPlain >= this.d.intervalMs || frac - this.lastPlainFrac >= 0.1 - 1e-9) {
      this.lastPlain = now;
      this.lastPlainFrac = frac;
      this.d.line(`${this.label}: ${this.status()}`);
    }
  }

  log(msg: string): void {
    this.d.log(msg);
  }

  end(summary?: string): void {
    if (this.ended) return;
    this.draw(true);
    this.ended = true;
    if (this.d.active === this) this.d.active = null;
    if (this.d.tty) this.d.clearLine();
    if (summary !== undefined) this.d.line(`${this.label}: ${summary}`);
  }
}

class Display implements ProgressDisplay {
  active: Task | null = null;
  private drawn = false;
  readonly tty: boolean;
  readonly intervalMs: number;
  readonly now: () => number;
  private readonly stream: NonNullable<ProgressOptions['stream']>;

  constructor(o: ProgressOptions) {
    this.stream = o.stream ?? process.stderr;
    this.tty = o.tty ?? !!this.stream.isTTY;
    this.intervalMs = o.intervalMs ?? 15_000;
    this.now = o.now ?? (() => performance.now());
  }

  columns(): number {
    return this.stream.columns && this.stream.columns > 20 ? this.stream.columns : 100;
  }

  task(label: string, unit = 'items'): ProgressTask {
    return new Task(this, label, unit);
  }

  redraw(text: string): void {
    this.stream.write(`\r\x1b[2K${text}`);
    this.drawn = true;
  }

  clearLine(): void {
    if (this.drawn) this.stream.write('\r\x1b[2K');
    this.drawn = false;
  }

  line(text: string): void {
    if (this.tty) this.clearLine();
    this.stream.write(`${text}\n`);
    if (this.tty && this.active) this.active.draw(true);
  }

  log(msg: string): void {
    this.line(msg);
  }

  close(): void {
    if (this.tty) this.clearLine();
  }
}

export function createProgress(o: ProgressOptions = {}): ProgressDisplay {
  return new Display(o);
}

/** Discards everything (tests, library use). */
export const silentProgress: ProgressDisplay = {
  task(): ProgressTask {
    let done = 0;
    let total = 0;
    return {
      start(t: number, d = 0) {
        total = t;
        done = d;
      },
      advance(n: number) {
        done += n;
      },
      set(d: number) {
        done = d;
      },
      note() {},
      log() {},
      end() {},
      get done() {
        return done;
      },
      get total() {
        return total;
      },
    };
  },
  log() {},
  close() {},
};

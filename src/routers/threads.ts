// Thread-count tuning of the native kernels during training. On a machine shared with other work a
// parallel GEMM waits for its slowest thread, and a thread that lost its core to another process stalls
// every step: one thread can then beat two. The tuner times the training steps at each candidate thread
// count, keeps the fastest, and measures again every few hundred steps. Results do not depend on the
// thread count (the kernels reduce in a fixed order), so tuning never changes the trained weights.

export class ThreadTuner {
  private readonly candidates: number[];
  private phase: 'probe' | 'run' = 'probe';
  private ci = 0;
  private times: number[] = [];
  private best: { threads: number; ms: number }[] = [];
  private runLeft = 0;
  current: number;

  constructor(
    private readonly setThreads: (n: number) => void,
    maxThreads: number,
    private readonly o = { warm: 3, probe: 24, run: 600 },
  ) {
    this.candidates = maxThreads > 1 ? [maxThreads, 1] : [maxThreads];
    this.current = maxThreads;
    if (this.candidates.length > 1) this.apply(this.candidates[0]);
    else this.phase = 'run';
  }

  private apply(n: number): void {
    if (n !== this.current) this.setThreads(n);
    this.current = n;
  }

  /** Call after every training step with its wall time. */
  step(ms: number): void {
    if (this.candidates.length < 2) return;
    if (this.phase === 'run') {
      if (--this.runLeft <= 0) {
        this.phase = 'probe';
        this.ci = 0;
        this.times = [];
        this.best = [];
        this.apply(this.candidates[0]);
      }
      return;
    }
    this.times.push(ms);
    if (this.times.length < this.o.warm + this.o.probe) return;
    const t = this.times.slice(this.o.warm).sort((a, b) => a - b);
    this.best.push({ threads: this.candidates[this.ci], ms: t[Math.floor(t.length / 2)] });
    this.times = [];
    if (++this.ci < this.candidates.length) {
      this.apply(this.candidates[this.ci]);
      return;
    }
    const win = this.best.reduce((a, b) => (b.ms < a.ms ? b : a));
    this.apply(win.threads);
    this.phase = 'run';
    this.runLeft = this.o.run;
  }
}

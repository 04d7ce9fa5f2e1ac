import { describe, expect, it } from 'vitest';
import { createProgress, formatCount, formatDuration, formatBytes } from '../../src/progress/index.ts';

function sink(isTTY: boolean) {
  const chunks: string[] = [];
  return { stream: { isTTY, columns: 120, write: (s: string) => (chunks.push(s), true) } as unknown as NodeJS.WritableStream, chunks };
}

describe('progress display', () => {
  it('plain mode: a start line, a line per 10% or interval, a summary; rate and ETA exclude resumed work', () => {
    let now = 0;
    const s = sink(false);
    const d = createProgress({ stream: s.stream, now: () => now, intervalMs: 60_000 });
    const t = d.task('collect', 'tok');
    t.start(1000, 200);
    for (let i = 0; i < 8; i++) {
      now += 1000;
      t.advance(100); // 100 tok/s
    }
    t.end('done');
    const text = s.chunks.join('');
    expect(text.split('\n')[0]).toBe('collect: resuming at 200/1000 tok');
    expect(text).toContain('collect: 30.0% 300/1000 tok · 100 tok/s · ETA 7s');
    expect(text).toContain('collect: 100.0% 1000/1000 tok · 100 tok/s · ETA 0s');
    expect(text.trimEnd().split('\n').at(-1)).toBe('collect: done');
    expect(text).not.toContain('\r');
  });

  it('TTY mode: one line redrawn in place with a bar, messages above it', () => {
    let now = 0;
    const s = sink(true);
    const d = createProgress({ stream: s.stream, now: () => now });
    const t = d.task('[1/2] collect', 'tok');
    t.start(100);
    now += 500;
    t.advance(50);
    d.log('a message');
    now += 500;
    t.advance(50);
    t.end('finished');
    d.close();
    const text = s.chunks.join('');
    expect(text).toMatch(/\r\x1b\[2K\[1\/2\] collect █+░+ 50\.0% 50\/100 tok · 100 tok\/s · ETA 1s/);
    expect(text).toContain('a message\n');
    expect(text).toContain('[1/2] collect: finished\n');
  });

  it('formats counts, durations and bytes', () => {
    expect(formatCount(999)).toBe('999');
    expect(formatCount(12_345)).toBe('12.3k');
    expect(formatCount(200_000)).toBe('200k');
    expect(formatCount(2_500_000)).toBe('2.50M');
    expect(formatDuration(75)).toBe('1m15s');
    expect(formatDuration(3700)).toBe('1h01m');
    expect(formatBytes(531254936)).toBe('506.6 MiB');
  });
});

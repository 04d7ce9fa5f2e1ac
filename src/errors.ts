// One error type and one message shape for everything a user can get wrong:
//   "<file>: <field>: expected <what>, received <what>"
// The CLI prints `message` and exits with `exitCode` (2 for bad input), never a stack trace.

export type ErrorKind =
  | 'bad-input' // a file or argument the user gave is wrong
  | 'not-found'
  | 'unsupported'
  | 'native' // the native addon reported a failure
  | 'interrupted'
  | 'threshold'; // a validation threshold was exceeded

export class PolarError extends Error {
  readonly kind: ErrorKind;
  readonly exitCode: number;
  readonly file?: string;
  readonly field?: string;

  constructor(kind: ErrorKind, message: string, opts: { file?: string; field?: string; exitCode?: number; cause?: unknown } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'PolarError';
    this.kind = kind;
    this.file = opts.file;
    this.field = opts.field;
    this.exitCode = opts.exitCode ?? (kind === 'native' ? 1 : kind === 'threshold' ? 3 : 2);
  }
}

function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? v.slice(0, 77) + '...' : v);
  try {
    const s = JSON.stringify(v);
    return s.length > 80 ? s.slice(0, 77) + '...' : s;
  } catch {
    return String(v);
  }
}

/** Bad input in a file: names the file, the field, what was expected and what was found. */
export function badInput(file: string, field: string, expected: string, received?: unknown, receivedIsText = false): PolarError {
  const got = receivedIsText ? String(received) : show(received);
  return new PolarError('bad-input', `${file}: ${field}: expected ${expected}, received ${got}`, { file, field });
}

/** Bad command-line argument or option. */
export function badArg(name: string, expected: string, received?: unknown): PolarError {
  return new PolarError('bad-input', `${name}: expected ${expected}, received ${show(received)}`, { field: name });
}

export function notFound(file: string, what: string, hint?: string): PolarError {
  return new PolarError('not-found', `${file}: ${what} not found${hint ? ` (${hint})` : ''}`, { file });
}

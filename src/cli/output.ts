// Output for the `sluice` command: aligned text tables for people, JSON for scripts (-o json).

export type OutputFormat = 'table' | 'json';
export const outputFormats: readonly OutputFormat[] = ['table', 'json'];

export type Cell = string | number | bigint | boolean | null | undefined;

export interface Column {
  /** Header text. */
  header: string;
  /** Right-align (numbers); defaults to true when every value in the column is a number. */
  right?: boolean;
}

function text(c: Cell): string {
  if (c === null || c === undefined) return '-';
  return String(c);
}

/**
 * Formats rows as a table: a header line, then one line per row, columns separated by two
 * spaces and aligned; numbers are right-aligned. No trailing spaces.
 */
export function formatTable(columns: Array<string | Column>, rows: Cell[][], indent = ''): string {
  const cols: Column[] = columns.map((c) => (typeof c === 'string' ? { header: c } : c));
  const cells = rows.map((r) => cols.map((_, i) => text(r[i])));
  const right = cols.map(
    (c, i) =>
      c.right ??
      (rows.length > 0 && rows.every((r) => typeof r[i] === 'number' || typeof r[i] === 'bigint' || r[i] == null)),
  );
  const widths = cols.map((c, i) => Math.max(c.header.length, ...cells.map((r) => r[i].length)));
  const line = (vals: string[]): string =>
    (
      indent +
      vals
        .map((v, i) => (right[i] ? v.padStart(widths[i]) : i === vals.length - 1 ? v : v.padEnd(widths[i])))
        .join('  ')
    ).trimEnd();
  return [line(cols.map((c) => c.header)), ...cells.map((r) => line(r))].join('\n');
}

/** JSON as printed by `-o json`: two-space indentation, bigints as numbers when safe. */
export function formatJson(value: unknown): string {
  return JSON.stringify(
    value,
    (_k, v: unknown) => (typeof v === 'bigint' ? (v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString()) : v),
    2,
  );
}

/** Where command output goes; tests and the demo substitute their own. */
export interface Printer {
  out(line: string): void;
  err(line: string): void;
}

export const stdio: Printer = {
  out: (line) => process.stdout.write(line + '\n'),
  err: (line) => process.stderr.write(line + '\n'),
};

/** An error meant for the user: printed as `sluice: <message>`, never with a stack trace. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

// Label selectors for the policy engine: Calico's selector expressions and Kubernetes
// LabelSelectors, parsed into one normalised AST that a single evaluator serves.
//
// The grammar and the matching rules follow libcalico-go's tokenizer, parser and AST
// (lib/selector): whitespace is space and tab only; `in`, `not in`, `contains`, `starts with`
// and `ends with` are recognised by prefix right after a label, so `k in{'a'}` and even
// `k notin {'a'}` are accepted as Calico accepts them; an empty selector is `all()`; `{}` sets
// may be empty and may end with a comma; string literals have no escapes.
//
// Every AST is normalised when built (by the parsers or by `and`), so that two spellings of the
// same selector give the same tree and the same `selectorToString`: `&&`/`||` are flattened,
// their operands sorted and deduplicated, `all()` is absorbed, `!` is pushed into `==`, `!=`,
// `in` and `not in`, double negation cancels, sets are sorted and deduplicated and a set of one
// is written as `==`/`!=`. Nodes are frozen: they are shared through the parse cache.

export type ValueOp = 'eq' | 'ne' | 'contains' | 'startsWith' | 'endsWith';

export type Selector =
  | { readonly kind: 'all' }
  /** Calico's `global()`: a resource that is not namespaced (see `LABEL_NAMESPACE`). */
  | { readonly kind: 'global' }
  | { readonly kind: 'has'; readonly key: string }
  | { readonly kind: ValueOp; readonly key: string; readonly value: string }
  /** Values sorted, distinct, never exactly one (that is `eq`/`ne`); may be empty. */
  | { readonly kind: 'in' | 'notIn'; readonly key: string; readonly values: readonly string[] }
  /** Never around `eq`, `ne`, `in`, `notIn` or another `not`. */
  | { readonly kind: 'not'; readonly operand: Selector }
  /** At least two operands, none an `and` in an `and` (`or` in `or`) nor `all()`, distinct, sorted by text. */
  | { readonly kind: 'and' | 'or'; readonly operands: readonly Selector[] };

export type Labels = Readonly<Record<string, string>>;

/**
 * Calico's label carrying an endpoint's namespace. Only namespaced resources have it, which is
 * how Calico itself gives `global()` its meaning ("all non-namespaced resources"): it rewrites
 * a `global()` namespaceSelector to `!has(projectcalico.org/namespace)`.
 */
export const LABEL_NAMESPACE = 'projectcalico.org/namespace';

export class SelectorError extends Error {
  override readonly name = 'SelectorError';
  constructor(
    readonly selector: string,
    /** 0-based offset in `selector` where the problem was found. */
    readonly position: number,
    readonly reason: string,
  ) {
    super(`bad selector ${JSON.stringify(selector)}: ${reason} at position ${position}`);
  }
}

/** A Kubernetes `metav1.LabelSelector` (client-node's `V1LabelSelector` fits). */
export interface LabelSelector {
  matchLabels?: Record<string, string> | null;
  matchExpressions?: Array<{ key: string; operator: string; values?: string[] | null }> | null;
}

/** A LabelSelector Kubernetes would refuse; `field` is relative to the LabelSelector. */
export class LabelSelectorError extends Error {
  override readonly name = 'LabelSelectorError';
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
  }
}

// ---- construction (normalising) ----

// Every node built here is in normal form; hand-built trees are normalised on the way out.
const canonical = new WeakSet<Selector>();

function node<T extends Selector>(n: T): T {
  Object.freeze(n);
  canonical.add(n);
  return n;
}

export const ALL: Selector = node({ kind: 'all' });
const GLOBAL: Selector = node({ kind: 'global' });

function setOf(kind: 'in' | 'notIn', key: string, values: Iterable<string>): Selector {
  const sorted = [...new Set(values)].sort(compareStrings);
  if (sorted.length === 1) return node({ kind: kind === 'in' ? 'eq' : 'ne', key, value: sorted[0] });
  return node({ kind, key, values: Object.freeze(sorted) });
}

function not(s: Selector): Selector {
  switch (s.kind) {
    case 'not':
      return s.operand;
    case 'eq':
      return node({ kind: 'ne', key: s.key, value: s.value });
    case 'ne':
      return node({ kind: 'eq', key: s.key, value: s.value });
    case 'in':
      return node({ kind: 'notIn', key: s.key, values: s.values });
    case 'notIn':
      return node({ kind: 'in', key: s.key, values: s.values });
    default:
      return node({ kind: 'not', operand: s });
  }
}

function junction(kind: 'and' | 'or', operands: readonly Selector[]): Selector {
  const byString = new Map<string, Selector>();
  for (const op of operands.map(normalize)) {
    for (const o of op.kind === kind ? op.operands : [op]) {
      if (o.kind === 'all') {
        if (kind === 'or') return ALL;
        continue; // x && all() is x
      }
      byString.set(selectorToString(o), o);
    }
  }
  if (byString.size === 0) return kind === 'and' ? ALL : not(ALL);
  if (byString.size === 1) return byString.values().next().value as Selector;
  const keys = [...byString.keys()].sort(compareStrings);
  return node({ kind, operands: Object.freeze(keys.map((k) => byString.get(k) as Selector)) });
}

function normalize(s: Selector): Selector {
  if (canonical.has(s)) return s;
  switch (s.kind) {
    case 'in':
    case 'notIn':
      return setOf(s.kind, s.key, s.values);
    case 'not':
      return not(normalize(s.operand));
    case 'and':
    case 'or':
      return junction(s.kind, s.operands);
    default:
      return node({ ...s });
  }
}

/** Both `a` and `b` (e.g. a pod selector and a namespace selector), normalised. */
export function and(a: Selector, b: Selector): Selector {
  return junction('and', [a, b]);
}

// Code-unit order, not locale order: the canonical form must not depend on the machine.
function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---- Calico selector text ----

type TokenKind = 'label' | 'string' | 'has' | 'all' | 'global' | 'op' | '(' | ')' | '{' | '}' | ',' | '!' | '&&' | '||';

interface Token {
  kind: TokenKind | 'eof';
  pos: number;
  /** The label key (label, has), the literal's content (string), the `ValueOp | 'in' | 'notIn'` (op). */
  text: string;
}

const IDENT = /[A-Za-z0-9_./-]+/y;
const FUNCTION = /(has|all|global)\(/y;
// Prefix matches, as Calico's tokenizer does them (`k notin {...}` is accepted there).
const OPERATOR = /contains|starts[ \t]*with|ends[ \t]*with|not[ \t]*in|in/y;
const OPERATOR_WORDS = [
  ['contains', 'contains'],
  ['starts', 'startsWith'],
  ['ends', 'endsWith'],
  ['not', 'notIn'],
] as const;
// Deeper nesting is refused rather than left to overflow the stack.
const MAX_DEPTH = 256;

function skipSpace(src: string, i: number): number {
  while (src[i] === ' ' || src[i] === '\t') i++;
  return i;
}

function matchAt(re: RegExp, src: string, i: number): RegExpExecArray | null {
  re.lastIndex = i;
  return re.exec(src);
}

function tokenize(src: string): Token[] {
  function fail(pos: number, reason: string): never {
    throw new SelectorError(src, pos, reason);
  }
  const tokens: Token[] = [];
  const push = (kind: Token['kind'], pos: number, text: string) => tokens.push({ kind, pos, text });
  let i = 0;
  for (;;) {
    i = skipSpace(src, i);
    if (i >= src.length) {
      push('eof', i, '');
      return tokens;
    }
    const c = src[i];
    const prev = tokens[tokens.length - 1];
    switch (c) {
      case '(':
      case ')':
      case '{':
      case '}':
      case ',':
        push(c, i++, c);
        continue;
      case "'":
      case '"': {
        const end = src.indexOf(c, i + 1);
        if (end < 0) fail(i, 'unterminated string literal');
        push('string', i, src.slice(i + 1, end));
        i = end + 1;
        continue;
      }
      case '=':
      case '&':
      case '|':
        if (src[i + 1] !== c) fail(i, `expected '${c}${c}'`);
        if (c === '=') push('op', i, 'eq');
        else push(c === '&' ? '&&' : '||', i, c + c);
        i += 2;
        continue;
      case '!':
        if (src[i + 1] === '=') {
          push('op', i, 'ne');
          i += 2;
        } else {
          push('!', i++, '!');
        }
        continue;
    }
    if (prev?.kind === 'label') {
      const m = matchAt(OPERATOR, src, i);
      if (!m) fail(i, `expected an operator after label '${prev.text}'`);
      const word = m[0];
      push('op', i, OPERATOR_WORDS.find(([w]) => word.startsWith(w))?.[1] ?? 'in');
      i += word.length;
      continue;
    }
    const fn = matchAt(FUNCTION, src, i);
    if (fn) {
      const name = fn[1] as 'has' | 'all' | 'global';
      let j = skipSpace(src, i + fn[0].length);
      let key = '';
      if (name === 'has') {
        const id = matchAt(IDENT, src, j);
        if (!id) fail(j, 'expected a label name in has()');
        key = id[0];
        j = skipSpace(src, j + key.length);
      }
      if (src[j] !== ')') fail(j, `expected ')' to close ${name}(`);
      push(name, i, key);
      i = j + 1;
      continue;
    }
    const id = matchAt(IDENT, src, i);
    if (!id) fail(i, `unexpected character ${JSON.stringify(c)}`);
    const key = id[0];
    if (src[i + key.length] === '(') fail(i, `unknown function '${key}()'`);
    push('label', i, key);
    i += key.length;
  }
}

function describe(t: Token): string {
  switch (t.kind) {
    case 'eof':
      return 'the end of the selector';
    case 'label':
      return `label '${t.text}'`;
    case 'string':
      return `string ${JSON.stringify(t.text)}`;
    case 'has':
      return `has(${t.text})`;
    case 'all':
    case 'global':
      return `${t.kind}()`;
    case 'op':
      return `'${OP_TEXT[t.text as ValueOp]}'`;
    default:
      return `'${t.text}'`;
  }
}

class Parser {
  private i = 0;
  private depth = 0;
  constructor(
    private readonly src: string,
    private readonly tokens: Token[],
  ) {}

  private fail(t: Token, reason: string): never {
    throw new SelectorError(this.src, t.pos, reason);
  }

  private peek(): Token {
    return this.tokens[this.i];
  }

  private next(): Token {
    return this.tokens[this.i++];
  }

  private expect(kind: TokenKind, what: string): Token {
    const t = this.next();
    if (t.kind !== kind) this.fail(t, `expected ${what}`);
    return t;
  }

  parseRoot(): Selector {
    if (this.peek().kind === 'eof') return ALL; // Calico: an empty selector is all()
    const s = this.parseOr();
    const t = this.peek();
    if (t.kind !== 'eof') this.fail(t, `unexpected ${describe(t)} (expected '&&', '||' or the end)`);
    return s;
  }

  private parseOr(): Selector {
    const operands = [this.parseAnd()];
    while (this.peek().kind === '||') {
      this.i++;
      operands.push(this.parseAnd());
    }
    return operands.length === 1 ? operands[0] : junction('or', operands);
  }

  private parseAnd(): Selector {
    const operands = [this.parseUnary()];
    while (this.peek().kind === '&&') {
      this.i++;
      operands.push(this.parseUnary());
    }
    return operands.length === 1 ? operands[0] : junction('and', operands);
  }

  private parseUnary(): Selector {
    const t = this.next();
    if ((t.kind === '!' || t.kind === '(') && ++this.depth > MAX_DEPTH) this.fail(t, 'nested too deeply');
    switch (t.kind) {
      case '!': {
        const s = not(this.parseUnary());
        this.depth--;
        return s;
      }
      case '(': {
        const s = this.parseOr();
        this.expect(')', "')'");
        this.depth--;
        return s;
      }
      case 'all':
        return ALL;
      case 'global':
        return GLOBAL;
      case 'has':
        return node({ kind: 'has', key: t.text });
      case 'label':
        return this.parseComparison(t.text);
      case 'eof':
        return this.fail(t, 'expected an expression');
      default:
        return this.fail(t, `unexpected ${describe(t)}`);
    }
  }

  private parseComparison(key: string): Selector {
    const op = this.next();
    if (op.kind !== 'op') this.fail(op, `expected an operator after label '${key}'`);
    if (op.text !== 'in' && op.text !== 'notIn') {
      const value = this.expect('string', 'a string literal').text;
      return node({ kind: op.text as ValueOp, key, value });
    }
    this.expect('{', "'{'");
    const values: string[] = [];
    for (;;) {
      let t = this.next();
      if (t.kind === '}') break;
      if (t.kind !== 'string') this.fail(t, "expected a string literal or '}'");
      values.push(t.text);
      t = this.next();
      if (t.kind === '}') break;
      if (t.kind !== ',') this.fail(t, "expected ',' or '}'");
    }
    return setOf(op.text, key, values);
  }
}

// Selectors repeat across policies and rules, and every update re-reads them: parse each once.
// When full the cache drops its oldest entry (no LRU refresh: a hit must stay cheap).
const PARSE_CACHE_SIZE = 4096;
const parseCache = new Map<string, Selector>();

/** Parses a Calico selector expression; throws `SelectorError`. Results are cached and frozen. */
export function parseSelector(text: string): Selector {
  let sel = parseCache.get(text);
  if (sel === undefined) {
    sel = new Parser(text, tokenize(text)).parseRoot();
    if (parseCache.size >= PARSE_CACHE_SIZE) parseCache.delete(parseCache.keys().next().value as string);
    parseCache.set(text, sel);
  }
  return sel;
}

// ---- Kubernetes LabelSelector ----

const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function validKey(key: string): boolean {
  const parts = key.split('/');
  if (parts.length > 2) return false;
  const name = parts[parts.length - 1];
  const prefix = parts.length === 2 ? parts[0] : undefined;
  return LABEL_NAME.test(name) && (prefix === undefined || (prefix.length <= 253 && DNS_SUBDOMAIN.test(prefix)));
}

function validValue(value: string): boolean {
  return value === '' || LABEL_NAME.test(value);
}

/**
 * Converts a Kubernetes LabelSelector; `{}` selects everything. (What an absent selector means
 * depends on the field, so it is the caller's business.) Throws `LabelSelectorError` for what
 * the API server would refuse: unknown operators, In/NotIn without values, Exists/DoesNotExist
 * with values, malformed keys or values.
 */
export function labelSelectorToSelector(ls: LabelSelector): Selector {
  const parts: Selector[] = [];
  for (const [key, value] of Object.entries(ls.matchLabels ?? {})) {
    if (!validKey(key)) throw new LabelSelectorError('matchLabels', `invalid label key ${JSON.stringify(key)}`);
    if (typeof value !== 'string' || !validValue(value)) {
      throw new LabelSelectorError(
        `matchLabels`,
        `invalid value ${JSON.stringify(value)} for key ${JSON.stringify(key)}`,
      );
    }
    parts.push(node({ kind: 'eq', key, value }));
  }
  (ls.matchExpressions ?? []).forEach((req, i) => {
    const field = `matchExpressions[${i}]`;
    if (typeof req.key !== 'string' || !validKey(req.key)) {
      throw new LabelSelectorError(`${field}.key`, `invalid label key ${JSON.stringify(req.key)}`);
    }
    const values = req.values ?? [];
    switch (req.operator) {
      case 'In':
      case 'NotIn':
        if (values.length === 0) {
          throw new LabelSelectorError(`${field}.values`, `must be non-empty when operator is ${req.operator}`);
        }
        values.forEach((v, j) => {
          if (typeof v !== 'string' || !validValue(v)) {
            throw new LabelSelectorError(`${field}.values[${j}]`, `invalid label value ${JSON.stringify(v)}`);
          }
        });
        // NotIn also selects objects without the key, exactly as Calico's `not in`.
        parts.push(setOf(req.operator === 'In' ? 'in' : 'notIn', req.key, values));
        break;
      case 'Exists':
      case 'DoesNotExist':
        if (values.length > 0) {
          throw new LabelSelectorError(`${field}.values`, `must be empty when operator is ${req.operator}`);
        }
        parts.push(
          req.operator === 'Exists' ? node({ kind: 'has', key: req.key }) : not(node({ kind: 'has', key: req.key })),
        );
        break;
      default:
        throw new LabelSelectorError(
          `${field}.operator`,
          `unknown operator ${JSON.stringify(req.operator)} (expected In, NotIn, Exists or DoesNotExist)`,
        );
    }
  });
  return junction('and', parts);
}

// ---- canonical text ----

const KEY = /^[A-Za-z0-9_./-]+$/;
const OP_TEXT: Record<ValueOp | 'in' | 'notIn', string> = {
  eq: '==',
  ne: '!=',
  contains: 'contains',
  startsWith: 'starts with',
  endsWith: 'ends with',
  in: 'in',
  notIn: 'not in',
};

function quote(v: string): string {
  if (!v.includes("'")) return `'${v}'`;
  if (!v.includes('"')) return `"${v}"`;
  throw new Error(`cannot write ${JSON.stringify(v)} in a selector: it contains both kinds of quote`);
}

function keyText(k: string): string {
  if (!KEY.test(k)) throw new Error(`cannot write label key ${JSON.stringify(k)} in a selector`);
  return k;
}

const stringCache = new WeakMap<Selector, string>();

/**
 * The canonical text of a selector: Calico syntax that parses back to the same AST, with single
 * quotes (double when the value holds a `'`), one space around operators, sorted sets and
 * operands. Equivalent spellings give the same string, so it serves as a cache and dedup key.
 */
export function selectorToString(sel: Selector): string {
  let s = stringCache.get(sel);
  if (s === undefined) {
    s = write(sel);
    stringCache.set(sel, s);
  }
  return s;
}

function write(sel: Selector): string {
  const n = normalize(sel);
  if (n !== sel) return selectorToString(n);
  switch (sel.kind) {
    case 'all':
    case 'global':
      return `${sel.kind}()`;
    case 'has':
      return `has(${keyText(sel.key)})`;
    case 'in':
    case 'notIn':
      return `${keyText(sel.key)} ${OP_TEXT[sel.kind]} {${sel.values.map(quote).join(', ')}}`;
    case 'not': {
      const o = sel.operand;
      const inner = selectorToString(o);
      return o.kind === 'all' || o.kind === 'global' || o.kind === 'has' ? `!${inner}` : `!(${inner})`;
    }
    case 'and':
    case 'or':
      return sel.operands
        .map((o) => (o.kind === 'and' || o.kind === 'or' ? `(${selectorToString(o)})` : selectorToString(o)))
        .join(sel.kind === 'and' ? ' && ' : ' || ');
    default:
      return `${keyText(sel.key)} ${OP_TEXT[sel.kind]} ${quote(sel.value)}`;
  }
}

// ---- evaluation ----

export type Matcher = (labels: Labels) => boolean;

const compiled = new WeakMap<Selector, Matcher>();

/** A closure evaluating `sel`; compiled once per AST node. */
export function compile(sel: Selector): Matcher {
  let m = compiled.get(sel);
  if (!m) {
    m = build(sel);
    compiled.set(sel, m);
  }
  return m;
}

export function matches(sel: Selector, labels: Labels): boolean {
  return compile(sel)(labels);
}

// `typeof v === 'string'` rather than `!== undefined`: a plain object inherits `constructor` and
// friends, which are not labels.
function build(sel: Selector): Matcher {
  switch (sel.kind) {
    case 'all':
      return () => true;
    case 'global':
      return (l) => typeof l[LABEL_NAMESPACE] !== 'string';
    case 'has': {
      const k = sel.key;
      return (l) => typeof l[k] === 'string';
    }
    case 'eq': {
      const { key, value } = sel;
      return (l) => l[key] === value;
    }
    case 'ne': {
      const { key, value } = sel;
      return (l) => l[key] !== value;
    }
    case 'contains': {
      const { key, value } = sel;
      return (l) => {
        const v = l[key];
        return typeof v === 'string' && v.includes(value);
      };
    }
    case 'startsWith': {
      const { key, value } = sel;
      return (l) => {
        const v = l[key];
        return typeof v === 'string' && v.startsWith(value);
      };
    }
    case 'endsWith': {
      const { key, value } = sel;
      return (l) => {
        const v = l[key];
        return typeof v === 'string' && v.endsWith(value);
      };
    }
    case 'in': {
      const { key } = sel;
      const set = new Set(sel.values);
      return (l) => {
        const v = l[key];
        return typeof v === 'string' && set.has(v);
      };
    }
    case 'notIn': {
      const { key } = sel;
      const set = new Set(sel.values);
      return (l) => {
        const v = l[key];
        return typeof v !== 'string' || !set.has(v);
      };
    }
    case 'not': {
      const f = compile(sel.operand);
      return (l) => !f(l);
    }
    case 'and': {
      const fs = sel.operands.map(compile);
      return (l) => {
        for (const f of fs) if (!f(l)) return false;
        return true;
      };
    }
    case 'or': {
      const fs = sel.operands.map(compile);
      return (l) => {
        for (const f of fs) if (f(l)) return true;
        return false;
      };
    }
  }
}

/** The label keys `sel` reads: a change to any other label cannot change whether it matches. */
export function selectorLabelKeys(sel: Selector): Set<string> {
  const keys = new Set<string>();
  const walk = (s: Selector): void => {
    switch (s.kind) {
      case 'all':
        return;
      case 'global':
        keys.add(LABEL_NAMESPACE);
        return;
      case 'not':
        return walk(s.operand);
      case 'and':
      case 'or':
        return s.operands.forEach(walk);
      default:
        keys.add(s.key);
    }
  };
  walk(sel);
  return keys;
}

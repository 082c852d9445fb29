// Label selectors: Calico syntax and semantics (as libcalico-go's parser and the Calico docs have
// them), Kubernetes LabelSelectors, the canonical string used as a dedup key, and error reports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ALL,
  LABEL_NAMESPACE,
  LabelSelectorError,
  SelectorError,
  and,
  compile,
  labelSelectorToSelector,
  matches,
  parseSelector,
  selectorLabelKeys,
  selectorToString,
  type LabelSelector,
  type Labels,
  type Selector,
} from '../../src/policy/selector.js';

const web: Labels = { app: 'web', tier: 'frontend', 'kubernetes.io/metadata.name': 'default' };
const db: Labels = { app: 'db', tier: 'backend' };
const bare: Labels = {};

/** Asserts which of the label sets `text` matches. */
function check(text: string, cases: Array<[Labels, boolean]>): void {
  const sel = parseSelector(text);
  for (const [labels, want] of cases) {
    assert.equal(matches(sel, labels), want, `${text} on ${JSON.stringify(labels)}`);
  }
}

const str = (text: string) => selectorToString(parseSelector(text));

test('all() and the empty selector match everything; !all() matches nothing', () => {
  for (const t of ['all()', '', '   ', '\t', 'all( )'])
    check(t, [
      [web, true],
      [bare, true],
    ]);
  assert.deepEqual(parseSelector(''), ALL);
  check('!all()', [
    [web, false],
    [bare, false],
  ]);
});

test('== and != (a missing label is "not equal")', () => {
  check("app == 'web'", [
    [web, true],
    [db, false],
    [bare, false],
  ]);
  check("app != 'web'", [
    [web, false],
    [db, true],
    [bare, true],
  ]);
  check("app == ''", [
    [{ app: '' }, true],
    [bare, false],
  ]);
});

test('in and not in (not in also matches a missing label)', () => {
  check("app in {'web', 'api'}", [
    [web, true],
    [db, false],
    [bare, false],
  ]);
  check("app not in {'web', 'api'}", [
    [web, false],
    [db, true],
    [bare, true],
  ]);
  // Calico accepts an empty set: `in {}` matches nothing, `not in {}` everything.
  check('app in {}', [
    [web, false],
    [bare, false],
  ]);
  check('app not in {}', [
    [web, true],
    [bare, true],
  ]);
});

test('has() and !has()', () => {
  check('has(tier)', [
    [web, true],
    [db, true],
    [bare, false],
  ]);
  check('!has(tier)', [
    [web, false],
    [bare, true],
  ]);
  check('has( tier )', [[web, true]]);
});

test('contains, starts with, ends with need the label', () => {
  check("tier contains 'ron'", [
    [web, true],
    [db, false],
    [bare, false],
  ]);
  check("tier starts with 'front'", [
    [web, true],
    [db, false],
    [bare, false],
  ]);
  check("tier ends with 'end'", [
    [web, true],
    [db, true],
    [bare, false],
  ]);
  check("tier ends with ''", [
    [web, true],
    [bare, false],
  ]);
  check("!(tier contains 'x')", [
    [web, true],
    [bare, true],
  ]);
});

test('global() matches what has no namespace label (non-namespaced resources)', () => {
  check('global()', [
    [{ role: 'gns' }, true],
    [{ [LABEL_NAMESPACE]: 'default' }, false],
  ]);
  check('!global()', [
    [{ role: 'gns' }, false],
    [{ [LABEL_NAMESPACE]: 'default' }, true],
  ]);
  assert.deepEqual(selectorLabelKeys(parseSelector('global()')), new Set([LABEL_NAMESPACE]));
});

test('inherited object properties are not labels', () => {
  check('has(constructor)', [[bare, false]]);
  check("constructor != 'x'", [[bare, true]]);
  check("toString not in {'a', 'b'}", [[bare, true]]);
  check('has(constructor)', [[JSON.parse('{"constructor":"yes"}') as Labels, true]]);
});

test('precedence: ! over && over ||; parentheses group', () => {
  const A = { a: '1' };
  const B = { b: '1' };
  const C = { c: '1' };
  const BC = { b: '1', c: '1' };
  check("a == '1' || b == '1' && c == '1'", [
    [A, true],
    [B, false],
    [C, false],
    [BC, true],
    [bare, false],
  ]);
  check("(a == '1' || b == '1') && c == '1'", [
    [A, false],
    [BC, true],
    [{ a: '1', c: '1' }, true],
  ]);
  check('!has(a) && has(b) || has(c)', [
    [B, true],
    [C, true],
    [{ a: '1', b: '1' }, false],
    [bare, false],
  ]);
  check('!(has(a) && has(b))', [
    [A, true],
    [{ a: '1', b: '1' }, false],
  ]);
  check('!!has(a)', [
    [A, true],
    [B, false],
  ]);
  check("!a == '1'", [
    [A, false],
    [B, true],
  ]); // ! applies to the whole comparison
  // The example of Calico's selector reference, and how it says it is bracketed.
  assert.equal(
    str("! has(my-label) || my-label starts with 'prod' && role in {'frontend','business'}"),
    str("((!(has(my-label))) || ((my-label starts with 'prod') && (role in {'frontend','business'})))"),
  );
});

test('quotes: single or double, each may hold the other', () => {
  check(`app == "web"`, [[web, true]]);
  check(`msg == "it's"`, [[{ msg: "it's" }, true]]);
  check(`msg == 'say "hi"'`, [[{ msg: 'say "hi"' }, true]]);
  check(`app in {"web", 'db'}`, [
    [web, true],
    [db, true],
  ]);
  assert.equal(str(`msg == "it's"`), `msg == "it's"`);
  assert.equal(str(`msg == 'say "hi"'`), `msg == 'say "hi"'`);
  assert.equal(str(`app == "web"`), `app == 'web'`);
});

test('label keys with /, ., -, _ and digits', () => {
  check("kubernetes.io/metadata.name == 'default'", [
    [web, true],
    [db, false],
  ]);
  check("projectcalico.org/namespace in {'default', 'kube-system'}", [[{ [LABEL_NAMESPACE]: 'kube-system' }, true]]);
  check('has(app.kubernetes.io/part-of)', [[{ 'app.kubernetes.io/part-of': 'x' }, true]]);
  check("k8s-app_2 == 'dns'", [[{ 'k8s-app_2': 'dns' }, true]]);
});

test('spellings Calico also accepts', () => {
  const same = ["app in {'a','b'}", "app in{'a','b'}", "app  in  { 'a' , 'b' , }", "app\tin\t{'b', \"a\", 'a'}"];
  for (const t of same) assert.equal(str(t), "app in {'a', 'b'}", t);
  assert.equal(str("app=='a'&&b!='c'"), "app == 'a' && b != 'c'");
  assert.equal(str("k notin {'a','b'}"), "k not in {'a', 'b'}");
  assert.equal(str("k startswith 'a'"), "k starts with 'a'");
  assert.equal(str("k ends  with 'a'"), "k ends with 'a'");
  // Keywords are only operators right after a label.
  check("in in {'x', 'y'} && has(has) && all == 'z'", [[{ in: 'x', has: '', all: 'z' }, true]]);
});

test('canonical strings: equivalent spellings agree', () => {
  const groups: string[][] = [
    ["a == 'x' && b in {'y', 'z'}", `(b in {"z","y","y"}) && a=="x"`, "b in {'z','y'} && (a == 'x')"],
    ["k != 'v'", "!(k == 'v')", "!k == 'v'", "k not in {'v'}", "!!(k != 'v')"],
    ["k == 'v'", "k in {'v', 'v'}", "!(k != 'v')"],
    ["k not in {'a', 'b'}", "!(k in {'b', 'a'})"],
    ['has(a)', '!!has(a)', '(((has(a))))', 'has(a) && has(a)', 'has(a) || has(a)'],
    ["a == 'x'", "all() && a == 'x'", "a == 'x' && all()"],
    ['all()', "a == 'x' || all()", '', 'all() && all()'],
    ['has(a) || has(b) || has(c)', '(has(a) || has(b)) || has(c)', 'has(c) || (has(b) || has(a))'],
    ['has(a) && has(b) && has(c)', 'has(a) && (has(b) && has(c))', 'has(c) && has(a) && has(b)'],
    ['(has(a) || has(b)) && has(c)', 'has(c) && (has(b) || has(a))'],
  ];
  for (const g of groups) {
    const want = str(g[0]);
    for (const t of g) assert.equal(str(t), want, `${t} vs ${g[0]}`);
  }
  const distinct = ["a == 'x'", "a != 'x'", "a == 'y'", "b == 'x'", 'has(a)', '!has(a)', 'all()', 'global()', '!all()'];
  assert.equal(new Set(distinct.map(str)).size, distinct.length);
});

test('canonical strings: exact form', () => {
  const cases: Array<[string, string]> = [
    [`b in {"z",'y'} && a=="x"`, "a == 'x' && b in {'y', 'z'}"],
    ['has(c) || has(a) && has(b)', '(has(a) && has(b)) || has(c)'],
    ['!(has(a) || has(b))', '!(has(a) || has(b))'],
    ['!has(a)', '!has(a)'],
    ["!(k contains 'x')", "!(k contains 'x')"],
    ["k  starts   with 'x'", "k starts with 'x'"],
    ['k not in {}', 'k not in {}'],
    ['!global()', '!global()'],
  ];
  for (const [input, want] of cases) assert.equal(str(input), want, input);
});

test('hand-built trees get the canonical string of their normal form', () => {
  const hand: Selector = {
    kind: 'and',
    operands: [
      { kind: 'in', key: 'b', values: ['z', 'y', 'z'] },
      { kind: 'not', operand: { kind: 'eq', key: 'a', value: 'x' } },
      { kind: 'and', operands: [{ kind: 'all' }, { kind: 'has', key: 'c' }] },
    ],
  };
  assert.equal(selectorToString(hand), str("a != 'x' && b in {'y','z'} && has(c)"));
  assert.equal(selectorToString({ kind: 'in', key: 'k', values: ['v'] }), "k == 'v'");
  assert.throws(() => selectorToString({ kind: 'eq', key: 'k', value: `'"` }), /both kinds of quote/);
  assert.throws(() => selectorToString({ kind: 'has', key: 'a b' }), /label key/);
});

test('and() conjoins, normalised', () => {
  const pod = parseSelector("app == 'web'");
  const ns = parseSelector("kubernetes.io/metadata.name == 'default'");
  const both = and(pod, ns);
  assert.equal(selectorToString(both), str("kubernetes.io/metadata.name == 'default' && app == 'web'"));
  assert.equal(selectorToString(and(ns, pod)), selectorToString(both));
  assert.equal(and(pod, ALL), pod);
  assert.equal(and(ALL, ALL), ALL);
  assert.equal(matches(both, web), true);
  assert.equal(matches(both, { app: 'web' }), false);
  assert.equal(
    selectorToString(and(both, parseSelector("app == 'web' && has(x)"))),
    str(`${selectorToString(both)} && has(x)`),
  );
});

test('selectorLabelKeys: the keys a selector reads', () => {
  assert.deepEqual(
    selectorLabelKeys(parseSelector("a == 'x' && (!has(b) || c in {'1','2'}) && !(d ends with 'z') && all()")),
    new Set(['a', 'b', 'c', 'd']),
  );
  assert.deepEqual(selectorLabelKeys(ALL), new Set());
  assert.deepEqual(selectorLabelKeys(labelSelectorToSelector({ matchLabels: { x: 'y' } })), new Set(['x']));
});

test('parsing caches and freezes', () => {
  const a = parseSelector("app == 'web' && has(x)");
  assert.equal(parseSelector("app == 'web' && has(x)"), a);
  assert.ok(Object.isFrozen(a));
  assert.equal(compile(a), compile(a));
  assert.throws(() => {
    (a as { kind: string }).kind = 'or';
  }, TypeError);
});

test('Kubernetes LabelSelector: each operator', () => {
  const sel = (ls: LabelSelector) => labelSelectorToSelector(ls);
  const m = (ls: LabelSelector, l: Labels) => matches(sel(ls), l);
  assert.equal(sel({}), ALL);
  assert.equal(sel({ matchLabels: null, matchExpressions: null }), ALL);
  assert.equal(m({}, bare), true);
  assert.equal(m({ matchLabels: { app: 'web' } }, web), true);
  assert.equal(m({ matchLabels: { app: 'web', tier: 'backend' } }, web), false);
  const expr = (operator: string, values?: string[]): LabelSelector => ({
    matchExpressions: [{ key: 'app', operator, values }],
  });
  assert.equal(m(expr('In', ['web', 'api']), web), true);
  assert.equal(m(expr('In', ['web', 'api']), db), false);
  assert.equal(m(expr('In', ['web', 'api']), bare), false);
  assert.equal(m(expr('NotIn', ['web']), web), false);
  assert.equal(m(expr('NotIn', ['web']), db), true);
  assert.equal(m(expr('NotIn', ['web']), bare), true, 'NotIn matches an object without the key');
  assert.equal(m(expr('Exists'), web), true);
  assert.equal(m(expr('Exists', []), bare), false);
  assert.equal(m(expr('DoesNotExist'), web), false);
  assert.equal(m(expr('DoesNotExist'), bare), true);
  // matchLabels and matchExpressions are ANDed.
  const both: LabelSelector = {
    matchLabels: { tier: 'frontend' },
    matchExpressions: [{ key: 'app', operator: 'Exists' }],
  };
  assert.equal(m(both, web), true);
  assert.equal(m(both, { tier: 'frontend' }), false);
});

test('Kubernetes LabelSelector: same canonical string as the Calico spelling', () => {
  const k = (ls: LabelSelector) => selectorToString(labelSelectorToSelector(ls));
  assert.equal(k({ matchLabels: { app: 'web' } }), str("app == 'web'"));
  assert.equal(k({ matchExpressions: [{ key: 'app', operator: 'In', values: ['web'] }] }), str("app == 'web'"));
  assert.equal(
    k({
      matchLabels: { 'kubernetes.io/metadata.name': 'prod' },
      matchExpressions: [
        { key: 'tier', operator: 'NotIn', values: ['b', 'a', 'b'] },
        { key: 'app', operator: 'Exists' },
        { key: 'legacy', operator: 'DoesNotExist', values: [] },
      ],
    }),
    str("has(app) && !has(legacy) && tier not in {'a', 'b'} && kubernetes.io/metadata.name == 'prod'"),
  );
});

test('Kubernetes LabelSelector: validation', () => {
  const bad: Array<[LabelSelector, string, RegExp]> = [
    [
      { matchExpressions: [{ key: 'app', operator: 'Equals', values: ['x'] }] },
      'matchExpressions[0].operator',
      /unknown operator "Equals"/,
    ],
    [
      { matchExpressions: [{ key: 'app', operator: 'in', values: ['x'] }] },
      'matchExpressions[0].operator',
      /unknown operator/,
    ],
    [{ matchExpressions: [{ key: 'app', operator: 'In' }] }, 'matchExpressions[0].values', /non-empty .* In/],
    [
      {
        matchExpressions: [
          { key: 'a', operator: 'Exists' },
          { key: 'app', operator: 'NotIn', values: [] },
        ],
      },
      'matchExpressions[1].values',
      /non-empty/,
    ],
    [
      { matchExpressions: [{ key: 'app', operator: 'Exists', values: ['x'] }] },
      'matchExpressions[0].values',
      /must be empty .* Exists/,
    ],
    [
      { matchExpressions: [{ key: 'app', operator: 'DoesNotExist', values: ['x'] }] },
      'matchExpressions[0].values',
      /must be empty/,
    ],
    [{ matchExpressions: [{ key: '', operator: 'Exists' }] }, 'matchExpressions[0].key', /invalid label key/],
    [{ matchExpressions: [{ key: 'a/b/c', operator: 'Exists' }] }, 'matchExpressions[0].key', /invalid label key/],
    [
      { matchExpressions: [{ key: 'app', operator: 'In', values: ['ok', "it's"] }] },
      'matchExpressions[0].values[1]',
      /invalid label value/,
    ],
    [{ matchLabels: { 'Bad_Prefix/x': 'y' } }, 'matchLabels', /invalid label key/],
    [{ matchLabels: { app: '-web' } }, 'matchLabels', /invalid value "-web"/],
    [{ matchLabels: { app: 'x'.repeat(64) } }, 'matchLabels', /invalid value/],
  ];
  for (const [ls, field, reason] of bad) {
    assert.throws(
      () => labelSelectorToSelector(ls),
      (e: unknown) => e instanceof LabelSelectorError && e.field === field && reason.test(e.message),
      JSON.stringify(ls),
    );
  }
  // Good keys and values, including the empty value and a 63-character name.
  labelSelectorToSelector({ matchLabels: { 'example.com/app-name_1': '', ['x'.repeat(63)]: 'A.b-c_9' } });
});

test('errors: message, position and fields', () => {
  const err = (() => {
    try {
      parseSelector('app == ');
    } catch (e) {
      return e;
    }
  })();
  assert.ok(err instanceof SelectorError && err instanceof Error);
  assert.equal(err.message, 'bad selector "app == ": expected a string literal at position 7');
  assert.equal(err.selector, 'app == ');
  assert.equal(err.position, 7);
  assert.equal(err.reason, 'expected a string literal');
  assert.equal(err.name, 'SelectorError');

  const cases: Array<[string, number, string]> = [
    ["(app == 'web'", 13, "expected ')'"],
    ["(app == 'web' && (has(a)", 24, "expected ')'"],
    ["app == 'web')", 12, "unexpected ')' (expected '&&', '||' or the end)"],
    ["app == 'web' tier == 'x'", 13, "unexpected label 'tier' (expected '&&', '||' or the end)"],
    ["app == 'web", 7, 'unterminated string literal'],
    ['app == "web', 7, 'unterminated string literal'],
    ['app == web', 7, 'expected a string literal'],
    ["app = 'web'", 4, "expected '=='"],
    ['has(a) & has(b)', 7, "expected '&&'"],
    ['has(a) | has(b)', 7, "expected '||'"],
    ['foo(app)', 0, "unknown function 'foo()'"],
    ['All()', 0, "unknown function 'All()'"],
    ['has()', 4, 'expected a label name in has()'],
    ['has(a b)', 6, "expected ')' to close has("],
    ['all(x)', 4, "expected ')' to close all("],
    ["app equals 'web'", 4, "expected an operator after label 'app'"],
    ["app starts 'w'", 4, "expected an operator after label 'app'"],
    ['app', 3, "expected an operator after label 'app'"],
    ["app ('web')", 4, "expected an operator after label 'app'"],
    ["app in 'web'", 7, "expected '{'"],
    ["app in {'a' 'b'}", 12, "expected ',' or '}'"],
    ["app in {'a',,}", 12, "expected a string literal or '}'"],
    ["app in {'a'", 11, "expected ',' or '}'"],
    ['app in {,}', 8, "expected a string literal or '}'"],
    ['has(a) &&', 9, 'expected an expression'],
    ['!', 1, 'expected an expression'],
    ['()', 1, "unexpected ')'"],
    ['&& has(a)', 0, "unexpected '&&'"],
    ["'web'", 0, 'unexpected string "web"'],
    ["== 'web'", 0, "unexpected '=='"],
    ['('.repeat(300) + 'has(a)' + ')'.repeat(300), 256, 'nested too deeply'],
    ['!'.repeat(300) + 'has(a)', 256, 'nested too deeply'],
    ["app == 'web' @", 13, 'unexpected character "@"'],
    ["app == 'web'\n&& has(x)", 12, 'unexpected character "\\n"'],
  ];
  for (const [input, position, reason] of cases) {
    assert.throws(
      () => parseSelector(input),
      (e: unknown) => {
        assert.ok(e instanceof SelectorError, input);
        assert.equal(e.reason, reason, input);
        assert.equal(e.position, position, input);
        assert.equal(e.message, `bad selector ${JSON.stringify(input)}: ${reason} at position ${position}`);
        return true;
      },
    );
  }
});

// ---- property: random selectors from a small grammar ----

/** mulberry32: small, seeded, good enough to pick grammar productions. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const KEYS = ['a', 'b', 'app', 'kubernetes.io/metadata.name'];
const VALUES = ['', 'x', 'y', 'xy', 'web-1', "it's", 'say "hi"'];

/** A random selector as text, with its meaning computed independently of the module. */
interface Gen {
  text: string;
  eval: (l: Record<string, string>) => boolean;
}

function generate(rand: () => number, depth: number): Gen {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  const sp = () => pick(['', ' ', '  ', '\t']);
  const q = (v: string) => {
    const quotes = v.includes("'") ? ['"'] : v.includes('"') ? ["'"] : ["'", '"'];
    const c = pick(quotes);
    return c + v + c;
  };
  const r = rand();
  if (depth <= 0 || r < 0.45) {
    const k = pick(KEYS);
    const v = pick(VALUES);
    const has = (l: Record<string, string>) => Object.hasOwn(l, k);
    switch (pick(['all', 'global', 'has', 'eq', 'ne', 'in', 'notIn', 'contains', 'startsWith', 'endsWith'])) {
      case 'all':
        return { text: 'all()', eval: () => true };
      case 'global':
        return { text: 'global()', eval: (l) => !Object.hasOwn(l, LABEL_NAMESPACE) };
      case 'has':
        return { text: `has(${sp()}${k}${sp()})`, eval: has };
      case 'eq':
        return { text: `${k}${sp()}==${sp()}${q(v)}`, eval: (l) => has(l) && l[k] === v };
      case 'ne':
        return { text: `${k} !=${sp()}${q(v)}`, eval: (l) => !has(l) || l[k] !== v };
      case 'contains':
        return { text: `${k} contains ${q(v)}`, eval: (l) => has(l) && l[k].includes(v) };
      case 'startsWith':
        return { text: `${k} starts with ${q(v)}`, eval: (l) => has(l) && l[k].startsWith(v) };
      case 'endsWith':
        return { text: `${k} ends with ${q(v)}`, eval: (l) => has(l) && l[k].endsWith(v) };
      default: {
        const n = Math.floor(rand() * 4);
        const vs = Array.from({ length: n }, () => pick(VALUES));
        const negate = rand() < 0.5;
        const text = `${k} ${negate ? 'not in' : 'in'}${sp()}{${sp()}${vs.map(q).join(`${sp()},${sp()}`)}${sp()}}`;
        return { text, eval: (l) => (has(l) && vs.includes(l[k])) !== negate };
      }
    }
  }
  if (r < 0.6) {
    const g = generate(rand, depth - 1);
    return { text: `!${sp()}(${g.text})`, eval: (l) => !g.eval(l) };
  }
  if (r < 0.7) {
    const g = generate(rand, depth - 1);
    return { text: `(${sp()}${g.text}${sp()})`, eval: g.eval };
  }
  const n = 2 + Math.floor(rand() * 3);
  const gs = Array.from({ length: n }, () => generate(rand, depth - 1));
  const isAnd = rand() < 0.5;
  return {
    // Parenthesised: the generator's own tree shape is what `eval` means.
    text: gs.map((g) => `(${g.text})`).join(isAnd ? `${sp()}&&${sp()}` : `${sp()}||${sp()}`),
    eval: isAnd ? (l) => gs.every((g) => g.eval(l)) : (l) => gs.some((g) => g.eval(l)),
  };
}

function randomLabels(rand: () => number): Record<string, string> {
  const l: Record<string, string> = {};
  for (const k of [...KEYS, LABEL_NAMESPACE]) if (rand() < 0.6) l[k] = VALUES[Math.floor(rand() * VALUES.length)];
  return l;
}

test('property: 500 random selectors round-trip through the canonical string and keep their meaning', () => {
  const rand = prng(20240611);
  const labelSets = Array.from({ length: 40 }, () => randomLabels(rand));
  for (let i = 0; i < 500; i++) {
    const g = generate(rand, 4);
    const ast = parseSelector(g.text);
    const canon = selectorToString(ast);
    const again = parseSelector(canon);
    assert.deepEqual(again, ast, `${g.text}\n -> ${canon}`);
    assert.equal(selectorToString(again), canon);
    for (const l of labelSets) {
      const want = g.eval(l);
      assert.equal(matches(ast, l), want, `${g.text} on ${JSON.stringify(l)}`);
      assert.equal(matches(again, l), want, `${canon} on ${JSON.stringify(l)}`);
    }
    // Every key the selector reads is reported.
    const keys = selectorLabelKeys(ast);
    for (const l of labelSets) {
      const others = Object.fromEntries(Object.entries(l).filter(([k]) => keys.has(k)));
      assert.equal(matches(ast, others), matches(ast, l), `${canon}: unreported key`);
    }
  }
});

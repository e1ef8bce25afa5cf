// Writes test/fixtures/kubernetes-schema.json, the JSON Schema that
// test/deploy.test.ts validates deploy/kubernetes/*.yaml against: the part of a
// Kubernetes release's OpenAPI v2 document (api/openapi-spec/swagger.json, The
// Kubernetes Authors, Apache-2.0) reachable from the kinds listed below.
//
//   node scripts/kubernetes-schema.mjs path/to/swagger.json 1.36
//
// Compared with the published document the output is:
// - pruned: only definitions reachable from KINDS, without descriptions or
//   x-kubernetes-* annotations (the file stays small and diffs stay readable);
// - strict: every object that lists its properties rejects other properties,
//   as the API server does for `kubectl apply` (strict field validation, the
//   default since 1.27), so a misspelled field fails instead of being dropped;
// - faithful to what the API accepts for two string-typed wrappers: IntOrString
//   takes an integer or a string, Quantity a number or a quantity string
//   (`nvidia.com/gpu: 1` is valid YAML for the API server).
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const KINDS = [
  ['v1', 'ConfigMap'],
  ['v1', 'PersistentVolumeClaim'],
  ['v1', 'Pod'],
  ['v1', 'Secret'],
  ['v1', 'Service'],
  ['v1', 'ServiceAccount'],
  ['apps/v1', 'Deployment'],
  ['apps/v1', 'StatefulSet'],
  ['batch/v1', 'Job'],
  ['networking.k8s.io/v1', 'NetworkPolicy'],
  ['policy/v1', 'PodDisruptionBudget'],
];

const SPECIAL = {
  'io.k8s.apimachinery.pkg.util.intstr.IntOrString': { anyOf: [{ type: 'integer' }, { type: 'string' }] },
  'io.k8s.apimachinery.pkg.api.resource.Quantity': { anyOf: [{ type: 'number' }, { type: 'string', format: 'quantity' }] },
};

const KEEP = new Set(['type', 'format', 'properties', 'items', 'required', 'additionalProperties', 'enum', '$ref']);

const [swaggerPath, release] = process.argv.slice(2);
if (!swaggerPath || !release) {
  console.error('usage: node scripts/kubernetes-schema.mjs SWAGGER.json RELEASE (e.g. 1.36)');
  process.exit(2);
}
const swagger = JSON.parse(readFileSync(swaggerPath, 'utf8'));
const all = swagger.definitions;

/** apiVersion/kind → definition name, from the x-kubernetes-group-version-kind annotations. */
const byKind = new Map();
for (const [name, d] of Object.entries(all)) {
  for (const gvk of d['x-kubernetes-group-version-kind'] ?? []) {
    const apiVersion = gvk.group ? `${gvk.group}/${gvk.version}` : gvk.version;
    // The same schema is annotated for several kinds (e.g. DeleteOptions); a kind's own definition ends in its name.
    if (name.endsWith(`.${gvk.kind}`)) byKind.set(`${apiVersion}/${gvk.kind}`, name);
  }
}

function clean(node) {
  if (Array.isArray(node)) return node.map(clean);
  if (node === null || typeof node !== 'object') return node;
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    if (!KEEP.has(k)) continue;
    if (k === 'properties') out[k] = Object.fromEntries(Object.entries(v).map(([p, s]) => [p, clean(s)]));
    else out[k] = typeof v === 'object' ? clean(v) : v;
  }
  if (out.properties && out.additionalProperties === undefined) out.additionalProperties = false;
  return out;
}

function refsIn(node, found) {
  if (Array.isArray(node)) for (const x of node) refsIn(x, found);
  else if (node && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === '$ref' && typeof v === 'string') found.push(v.replace('#/definitions/', ''));
      else refsIn(v, found);
    }
  }
  return found;
}

const kinds = {};
const definitions = {};
const queue = [];
for (const [apiVersion, kind] of KINDS) {
  const name = byKind.get(`${apiVersion}/${kind}`);
  if (!name) throw new Error(`${apiVersion} ${kind} is not in ${swaggerPath}`);
  kinds[`${apiVersion}/${kind}`] = name;
  queue.push(name);
}
while (queue.length > 0) {
  const name = queue.pop();
  if (definitions[name]) continue;
  if (!all[name]) throw new Error(`dangling $ref to ${name}`);
  definitions[name] = SPECIAL[name] ?? clean(all[name]);
  queue.push(...refsIn(definitions[name], []));
}
const sorted = Object.fromEntries(
  Object.keys(definitions)
    .sort()
    .map((k) => [k, definitions[k]]),
);
const out = join(dirname(fileURLToPath(import.meta.url)), '..', 'test', 'fixtures', 'kubernetes-schema.json');
// One definition per line: small, and a regeneration diffs by definition.
const body = Object.entries(sorted)
  .map(([k, v]) => `      ${JSON.stringify(k)}: ${JSON.stringify(v)}`)
  .join(',\n');
const head = {
  source: `Kubernetes ${release} OpenAPI v2 definitions (The Kubernetes Authors, Apache-2.0), pruned and made strict by scripts/kubernetes-schema.mjs`,
  release,
  kinds,
};
// The schema proper is under "schema"; its $id is what the "#/definitions/…" references resolve against.
writeFileSync(out, `${JSON.stringify(head, null, 2).replace(/\n}$/, '')},\n  "schema": {\n    "$id": "kubernetes",\n    "definitions": {\n${body}\n    }\n  }\n}\n`);
console.log(`${out}: ${Object.keys(kinds).length} kinds, ${Object.keys(sorted).length} definitions`);

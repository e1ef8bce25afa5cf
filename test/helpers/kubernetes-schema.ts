/**
 * Kubernetes objects checked against the API's own schema: the definitions of a
 * Kubernetes release's OpenAPI document (test/fixtures/kubernetes-schema.json,
 * made by scripts/kubernetes-schema.mjs), compiled with ajv and the Kubernetes
 * formats (quantity, byte, int32, …) of @kubernetes-models/validate, whose
 * runValidateFunc words the errors — the pieces the kubernetes-models classes
 * validate with. An object is matched to its schema by apiVersion and kind.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { ErrorObject } from 'ajv';
import { formats, runValidateFunc, type ValidateFunc } from '@kubernetes-models/validate';

// The ajv that @kubernetes-models/validate itself depends on (its formats and
// error wording are made for it), wherever npm placed it.
const fromValidate = createRequire(createRequire(import.meta.url).resolve('@kubernetes-models/validate'));
const { Ajv } = fromValidate('ajv') as typeof import('ajv');

interface SchemaFile {
  release: string;
  kinds: Record<string, string>;
  schema: { $id: string; definitions: Record<string, unknown> };
}

const file = JSON.parse(readFileSync(new URL('../fixtures/kubernetes-schema.json', import.meta.url), 'utf8')) as SchemaFile;
export const KUBERNETES_RELEASE = file.release;

let ajv: InstanceType<typeof Ajv> | null = null;
const compiled = new Map<string, ValidateFunc<unknown>>();

function validatorFor(apiVersion: string, kind: string): ValidateFunc<unknown> | null {
  const key = `${apiVersion}/${kind}`;
  const definition = file.kinds[key];
  if (!definition) return null;
  let fn = compiled.get(key);
  if (!fn) {
    if (!ajv) {
      ajv = new Ajv({ allErrors: true, strict: true });
      for (const [name, format] of Object.entries(formats)) ajv.addFormat(name, format);
      ajv.addSchema(file.schema);
    }
    fn = ajv.compile({ $ref: `${file.schema.$id}#/definitions/${definition}` });
    compiled.set(key, fn);
  }
  return fn;
}

function describe(e: ErrorObject): string {
  const where = e.instancePath || '/';
  const extra = e.keyword === 'additionalProperties' ? `: ${String(e.params.additionalProperty)}` : '';
  return `${where} ${e.message ?? e.keyword}${extra}`;
}

/** The schema errors of one object ([] = valid), each as "/json/pointer message". */
export function kubernetesErrors(obj: unknown): string[] {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return ['/ not an object'];
  const { apiVersion, kind } = obj as { apiVersion?: unknown; kind?: unknown };
  if (typeof apiVersion !== 'string' || typeof kind !== 'string') return ['/ needs string apiVersion and kind'];
  const fn = validatorFor(apiVersion, kind);
  if (!fn) return [`/ no schema for apiVersion ${apiVersion} kind ${kind} (known: ${Object.keys(file.kinds).join(', ')})`];
  try {
    runValidateFunc(fn, obj);
    return [];
  } catch (e) {
    const errors = (e as { errors?: ErrorObject[] }).errors;
    if (!errors) throw e;
    return errors.map(describe);
  }
}

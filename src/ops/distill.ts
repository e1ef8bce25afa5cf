/**
 * Feature distillation from a frozen teacher (docs/methods.md#distillation), on raw embeddings
 * F_t (teacher) and F_s (student), B rows of D values each:
 *
 *   l2:      L = (1/R) Σ_i ‖F_t,i − F_s,i‖²,             ∂L/∂F_s,i = −(2/R)(F_t,i − F_s,i)
 *   angular: L = (1/R) Σ_i ‖n(F_t,i) − n(F_s,i)‖²
 *             = (1/R) Σ_i 2(1 − cos(F_t,i, F_s,i)),      ∂L/∂F_s,i = −(2/R)(t̂ − (ŝ·t̂)ŝ)/‖F_s,i‖
 *
 * (the VarGFaceNet form, paper eq. 5), n(v) = v / max(‖v‖, 1e-12). The teacher
 * gets no gradient. R is the number of rows the mean runs over: B on one
 * process; in training R = the GLOBAL batch (workers × B), each worker passing
 * its own B rows, so that the per-worker gradients, summed across workers like
 * every backbone gradient, are those of the global mean. Computed in float64.
 */

const DISTILL_KINDS = ['l2', 'angular'] as const;
export type DistillKind = (typeof DISTILL_KINDS)[number];

export interface DistillResult {
  /** (1/R) Σ over these rows. */
  loss: number;
  /** ∂loss/∂F_s, same layout as the student rows. */
  grad: Float64Array;
}

/**
 * `teacher`, `student`: row-major B×D. `meanOver` = R (default B).
 */
export function distillLoss(kind: DistillKind, teacher: ArrayLike<number>, student: ArrayLike<number>, dim: number, meanOver?: number): DistillResult {
  if (!DISTILL_KINDS.includes(kind)) throw new Error(`distill: unknown kind ${JSON.stringify(kind)} (expected ${DISTILL_KINDS.join(' or ')})`);
  if (!Number.isSafeInteger(dim) || dim < 1) throw new Error(`distill: dim must be a positive integer, got ${dim}`);
  if (teacher.length !== student.length) throw new Error(`distill: teacher has ${teacher.length} values, student ${student.length} (embedding sizes or batches differ)`);
  if (student.length % dim !== 0) throw new Error(`distill: ${student.length} values are not rows of ${dim}`);
  const rows = student.length / dim;
  const r = meanOver ?? rows;
  if (!(r > 0)) throw new Error(`distill: meanOver must be > 0, got ${r}`);
  const grad = new Float64Array(student.length);
  let loss = 0;
  for (let i = 0; i < rows; i++) {
    const o = i * dim;
    if (kind === 'l2') {
      for (let d = 0; d < dim; d++) {
        const diff = teacher[o + d]! - student[o + d]!;
        loss += diff * diff;
        grad[o + d] = (-2 / r) * diff;
      }
      continue;
    }
    let tt = 0;
    let ss = 0;
    for (let d = 0; d < dim; d++) {
      tt += teacher[o + d]! * teacher[o + d]!;
      ss += student[o + d]! * student[o + d]!;
    }
    const tn = Math.max(Math.sqrt(tt), 1e-12);
    const sNorm = Math.sqrt(ss);
    const sn = Math.max(sNorm, 1e-12);
    let cos = 0;
    for (let d = 0; d < dim; d++) cos += (teacher[o + d]! / tn) * (student[o + d]! / sn);
    // ‖t̂ − ŝ‖² (equal to 2 − 2cos for non-zero rows; exact for zero rows too)
    let dist = 0;
    for (let d = 0; d < dim; d++) {
      const diff = teacher[o + d]! / tn - student[o + d]! / sn;
      dist += diff * diff;
    }
    loss += dist;
    // the radial part only where the norm, not eps, divides (section 0)
    const radial = sNorm > 1e-12 ? cos : 0;
    for (let d = 0; d < dim; d++) grad[o + d] = ((-2 / r) * (teacher[o + d]! / tn - radial * (student[o + d]! / sn))) / sn;
  }
  return { loss: loss / r, grad };
}

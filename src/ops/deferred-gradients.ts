/**
 * A gradient tape that stays open across an `await`: record a forward pass
 * now, backpropagate later. The training step needs this because the
 * gradient at the backbone's output, ∂L/∂e, arrives only after an
 * asynchronous exchange with the other workers (docs/architecture.md#the-training-step);
 * `engine.gradients(f, xs, dy)` wants `f` and `dy` in one synchronous call,
 * which forced a second forward pass under the tape once `dy` was known.
 *
 * How tfjs-core 4.22 records (node_modules/@tensorflow/tfjs-core/dist/engine.js):
 * while `state.gradientDepth > 0` every kernel appends a node to
 * `state.activeTape` and keeps (`engine.keep`) clones of the tensors its
 * gradient needs, so no `tidy` frees them; `gradients` opens the tape
 * (depth 0 → 1 makes a fresh array), runs `f` in a tidy, closes it, filters
 * the nodes that lead from the xs to y, backpropagates `dy`, and, back at
 * depth 0, disposes every node's saved tensors and drops the tape.
 *
 * `DeferredTape.record(fn)` does the first half: it opens a fresh tape
 * exactly as `gradients` would, runs `fn` in a tidy, closes it and takes the
 * nodes away, putting the engine back as it was. Between two calls the engine
 * is at depth 0 with no tape of ours, so whatever runs in the gap (the
 * classifier's ops, another method's own `gradients` call, a teacher's
 * forward) is neither recorded into this tape nor able to free its saved
 * tensors. `gradients(y, xs, dy)` does the second half through the public
 * `engine.gradients`: its `f` hands the engine the recorded nodes and returns
 * the recorded `y`, so filtering, backpropagation and the freeing of the
 * saved tensors are the engine's own code, the same as a one-call gradient.
 * `dispose()` frees the saved tensors of a tape that is never backpropagated
 * (a step that fails in between).
 */
import { tf } from './tf.js';

type EngineState = ReturnType<typeof tf.engine>['state'];
type TapeNode = EngineState['activeTape'][number];

/** The tfjs-core release whose engine internals this module relies on (test/deferred-gradients.test.ts pins it). */
export const TAPE_ENGINE_VERSION = '4.22.0';

function engineState(): EngineState {
  const st = tf.engine().state as Partial<EngineState>;
  // activeTape exists only once a tape was opened; gradientDepth and kernelDepth from the start
  if (typeof st.gradientDepth !== 'number' || typeof st.kernelDepth !== 'number')
    throw new Error(`deferred gradients: the tfjs engine has no state.gradientDepth (written against tfjs-core ${TAPE_ENGINE_VERSION})`);
  return st as EngineState;
}

export class DeferredTape {
  private nodes: TapeNode[] = [];
  private done = false;

  /**
   * Runs `fn` with this tape recording (in a tidy: what `fn` returns survives,
   * its other intermediates are freed, the tensors the backward needs are
   * kept by the engine). May be called more than once; the nodes append in
   * call order, so a later call can build on an earlier one's outputs.
   */
  record<T extends tf.TensorContainer>(fn: () => T): T {
    this.checkOpen();
    const st = engineState();
    if (st.gradientDepth !== 0) throw new Error('deferred gradients: record() inside another gradient computation (tape already open)');
    const previous = st.activeTape;
    st.activeTape = [];
    st.gradientDepth++;
    try {
      return tf.tidy(fn);
    } finally {
      st.gradientDepth--;
      this.nodes.push(...st.activeTape);
      st.activeTape = previous;
    }
  }

  /**
   * ∂(Σ y·dy)/∂xs through the recorded nodes (dy defaults to ones), then frees
   * every saved tensor: the tape is spent. `y` must be a recorded output;
   * like `engine.gradients`, throws when no recorded node leads from xs to y.
   */
  gradients(y: tf.Tensor, xs: tf.Variable[], dy?: tf.Tensor): tf.Tensor[] {
    this.checkOpen();
    if (engineState().gradientDepth !== 0) throw new Error('deferred gradients: gradients() inside another gradient computation');
    const nodes = this.nodes;
    this.nodes = [];
    this.done = true;
    let grads: tf.Tensor[];
    try {
      grads = tf.engine().gradients(
        () => {
          // the engine has just opened a fresh tape for this call: give it the recorded one
          engineState().activeTape.push(...nodes);
          return y;
        },
        xs,
        dy,
      ).grads;
    } catch (e) {
      // the engine frees the saved tensors only when it gets to the end (disposing twice is a no-op)
      freeSaved(nodes);
      throw e;
    }
    const missing = xs.findIndex((_, i) => !grads[i]);
    if (missing >= 0) {
      grads.forEach((g) => g?.dispose());
      throw new Error(`deferred gradients: no recorded path from variable ${missing} (${xs[missing]!.name}) to the output`);
    }
    return grads;
  }

  /** Frees the saved tensors without backpropagating (idempotent; a no-op after `gradients`). */
  dispose(): void {
    freeSaved(this.nodes);
    this.nodes = [];
    this.done = true;
  }

  private checkOpen(): void {
    if (this.done) throw new Error('deferred gradients: this tape was already backpropagated or disposed');
  }
}

function freeSaved(nodes: readonly TapeNode[]): void {
  for (const n of nodes) for (const t of n.saved ?? []) t.dispose();
}
